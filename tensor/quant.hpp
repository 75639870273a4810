// Block quantization: Q8_0 and Q4_0 exactly as GGUF / llama.cpp store them, and the int8
// blocks activations are quantized to on the fly for integer dot products.
//
// A weight row of K values (K a multiple of 32) is K/32 blocks; each block is one F16 scale d
// followed by the quantized values (ggml's block_q8_0 / block_q4_0):
//   Q8_0 (34 bytes): d = amax / 127,            q[i] = round(x[i] / d)            in [-127, 127]
//                    x[i] ~ d * q[i]
//   Q4_0 (18 bytes): d = m / -8, m the value of largest magnitude (with its sign),
//                    q[i] = min(15, floor(x[i] / d + 8.5))                       in [0, 15]
//                    x[i] ~ d * (q[i] - 8); byte j holds element j in its low nibble and
//                    element j + 16 in its high nibble.
// Activations (the x of a matmul) are quantized per row into Q8 blocks kept as three arrays
// (QuantizedActs), with the scale in F32 and the integer sum of each block, so that a Q4_0
// kernel can multiply unsigned nibbles and subtract 8 * sum afterwards.
#pragma once

#include <cstddef>
#include <cstdint>

#include "tensor/dtype.hpp"

namespace purellm {

constexpr int kQuantBlock = 32;  // values per block, both types

struct BlockQ8_0 {
  uint16_t d;      // F16 scale
  int8_t q[32];
};
struct BlockQ4_0 {
  uint16_t d;      // F16 scale
  uint8_t q[16];   // element j: low nibble of q[j]; element j + 16: high nibble of q[j]
};
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18, "GGUF block layouts");

// n values (a multiple of 32) of src quantized into dst (n / 32 blocks).
void quantize_row_q8_0(const float* src, void* dst, int64_t n);
void quantize_row_q4_0(const float* src, void* dst, int64_t n);
// n values of a quantized row back to F32.
void dequantize_row_q8_0(const void* src, float* dst, int64_t n);
void dequantize_row_q4_0(const void* src, float* dst, int64_t n);

// One row of n F32 values written as dtype `to` (F32, F16, BF16, Q8_0, Q4_0): the conversion
// weights go through at load (--dtype). Quantized types need n % 32 == 0.
void convert_row_from_f32(DType to, const float* src, void* dst, int64_t n);

// Activations quantized to Q8 blocks, row t of T (K values, K % 32 == 0):
//   q: int8 [T, K]          d = amax / 127, q = round-half-even(x / d)   (0 when amax == 0)
//   d: float [T, K/32]      the scale of each block
//   s: int32 [T, K/32]      the sum of the 32 q of each block
struct QuantizedActs {
  int8_t* q = nullptr;
  float* d = nullptr;
  int32_t* s = nullptr;
  int64_t K = 0;
  // Bytes one needs for T rows of K values (the three arrays, each 64-byte aligned).
  static size_t bytes_for(int64_t T, int64_t K);
  // Views carved out of `memory` (bytes_for(T, K) bytes, 64-byte aligned).
  static QuantizedActs carve(void* memory, int64_t T, int64_t K);
  const int8_t* q_row(int64_t t) const { return q + t * K; }
  const float* d_row(int64_t t) const { return d + t * (K / kQuantBlock); }
  const int32_t* s_row(int64_t t) const { return s + t * (K / kQuantBlock); }
};

// Row t of the activations: K values of x quantized. The one quantizer of activations, shared
// by the reference and every SIMD matmul, so all of them multiply the same integers.
void quantize_acts_row(const float* x, QuantizedActs& a, int64_t t);

}  // namespace purellm
