// AVX-512 + VNNI: the AVX-512 table (kernels_avx512.cpp) with the quantized matmuls compiled
// here with -mavx512vnni, so vpdpbusd does four int8 multiply-adds per 32-bit lane.
#include "tensor/cpu/kernels_impl.hpp"

namespace purellm::cpu {

extern template const Kernels& kernel_table<xsimd::avx512bw>();

namespace {
struct Avx512Vnni {};  // the tag that gives these instantiations their own symbols
}  // namespace

const Kernels& kernel_table_avx512vnni() {
  static const Kernels table = [] {
    Kernels k = kernel_table<xsimd::avx512bw>();
    k.qmatmul_q8_0 = simd::qmatmul<Avx512Vnni, DType::Q8_0>;
    k.qmatmul_q4_0 = simd::qmatmul<Avx512Vnni, DType::Q4_0>;
    static constexpr Kernels::QMatmul r16[] = {simd::qmatmul_r16<Avx512Vnni, DType::Q8_0>,
                                               simd::qmatmul_r16<Avx512Vnni, DType::Q4_0>};
    k.qmatmul_r16 = r16;
    return k;
  }();
  return table;
}

}  // namespace purellm::cpu
