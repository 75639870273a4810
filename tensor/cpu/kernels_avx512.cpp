// AVX-512 (F, BW, VL, DQ) + FMA + F16C kernels, compiled with only those flags.
#include "tensor/cpu/kernels_impl.hpp"

namespace purellm::cpu {
template const Kernels& kernel_table<xsimd::avx512bw>();
}  // namespace purellm::cpu
