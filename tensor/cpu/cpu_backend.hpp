// The CPU backend: which instruction sets this binary has kernels for, which one runs, and
// a factory for a backend bound to one of them (tests compare every ISA with the scalar one).
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "tensor/backend.hpp"

namespace purellm::cpu {

// AVX512VNNI is AVX512 with integer dot products (vpdpbusd) for the quantized matmuls.
enum class Isa { Scalar, SSE2, AVX2, AVX512, AVX512VNNI, NEON };

std::string_view isa_name(Isa isa);        // "scalar", "sse2", "avx2", "avx512", "avx512vnni", "neon"
std::vector<Isa> compiled_isas();          // kernel sets built into this binary, Scalar first
bool isa_available(Isa isa);               // compiled in and supported by this CPU
// The ISA cpu_backend() uses: PURELLM_ISA when set (an error if unavailable), else the best.
Isa default_isa();

// A CPU backend whose ops run the kernels of `isa` (Scalar: the reference kernels).
std::unique_ptr<Backend> make_backend(Isa isa);

// Worker threads used by the kernels (OpenMP). 0 keeps the OpenMP default.
void set_num_threads(int n);
int num_threads();

}  // namespace purellm::cpu
