// AVX2 + FMA + F16C kernels, compiled with -mavx2 -mfma -mf16c only.
#include "tensor/cpu/kernels_impl.hpp"

namespace purellm::cpu {
template const Kernels& kernel_table<xsimd::fma3<xsimd::avx2>>();
}  // namespace purellm::cpu
