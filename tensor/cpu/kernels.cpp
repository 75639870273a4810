// Which kernel table each instruction set uses. This file sees only declarations: the
// definitions are instantiated in kernels_<isa>.cpp, compiled with that set's flags.
#include "tensor/cpu/kernels.hpp"

#include <xsimd/xsimd.hpp>

namespace purellm::cpu {

template <class Arch>
const Kernels& kernel_table();  // kernels_impl.hpp

#ifdef PURELLM_KERNELS_SSE2
extern template const Kernels& kernel_table<xsimd::sse2>();
#endif
#ifdef PURELLM_KERNELS_AVX2
extern template const Kernels& kernel_table<xsimd::fma3<xsimd::avx2>>();
#endif
#ifdef PURELLM_KERNELS_AVX512
extern template const Kernels& kernel_table<xsimd::avx512bw>();
#endif
#ifdef PURELLM_KERNELS_NEON
extern template const Kernels& kernel_table<xsimd::neon64>();
#endif

const Kernels* kernels_for(Isa isa) {
  switch (isa) {
#ifdef PURELLM_KERNELS_SSE2
    case Isa::SSE2: return &kernel_table<xsimd::sse2>();
#endif
#ifdef PURELLM_KERNELS_AVX2
    case Isa::AVX2: return &kernel_table<xsimd::fma3<xsimd::avx2>>();
#endif
#ifdef PURELLM_KERNELS_AVX512
    case Isa::AVX512: return &kernel_table<xsimd::avx512bw>();
#endif
#ifdef PURELLM_KERNELS_AVX512VNNI
    case Isa::AVX512VNNI: return &kernel_table_avx512vnni();
#endif
#ifdef PURELLM_KERNELS_NEON
    case Isa::NEON: return &kernel_table<xsimd::neon64>();
#endif
    default: return nullptr;
  }
}

}  // namespace purellm::cpu
