// SSE2 kernels (x86-64 baseline), compiled with -msse2 only.
#include "tensor/cpu/kernels_impl.hpp"

namespace purellm::cpu {
template const Kernels& kernel_table<xsimd::sse2>();
}  // namespace purellm::cpu
