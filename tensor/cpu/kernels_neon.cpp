// NEON kernels (AArch64 baseline: Jetson, Graviton, Apple silicon under Linux).
#include "tensor/cpu/kernels_impl.hpp"

namespace purellm::cpu {
template const Kernels& kernel_table<xsimd::neon64>();
}  // namespace purellm::cpu
