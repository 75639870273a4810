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

// ---- Q8_0_R16 / Q4_0_R16: a Q8_0 / Q4_0 matrix with its rows interleaved by 16 -----------------
// The CPU backend's layouts for its AVX-512 VNNI kernels (made at load from Q8_0 / Q4_0): one
// 64-byte load holds 4 bytes of the quants of each of 16 rows, so the integer sums of a block
// land in 16 lanes, one per row, and the block's 16 scales are one 32-byte load (no shuffle and
// no horizontal sum per row, as the plain layout needs). Rows 16g .. 16g+15 keep their bytes (16
// rows x ldb, ldb the bytes of one row) in this order: block b of the group, at 16 * bb * b (bb
// the plain block's bytes: 34 or 18), holds the 16 F16 scales, then for each 4 bytes c of the
// quants (8 for Q8_0, 4 for Q4_0's nibbles) those bytes of every row (64 bytes). Q8_0 quants are
// stored plus 128 (XOR 0x80), unsigned, as vpdpbusd multiplies. The last rows % 16 rows stay
// plain rows. Row r's bytes start where a plain row's would (r * ldb), so the rows from a
// multiple of 16 on are again an R16 matrix.
constexpr int64_t kR16 = 16;
// Q8_0 <-> Q8_0_R16, Q4_0 <-> Q4_0_R16.
DType interleaved_of(DType plain);
DType plain_of(DType interleaved);
// `rows` plain rows of n values (n % 32 == 0) of dtype `plain` from src into its R16 layout at
// dst (the same size; dst may be src: one group at a time goes through a buffer).
void interleave_rows(DType plain, const void* src, void* dst, int64_t rows, int64_t n);
// Blocks b0 .. b0 + count - 1 of row r of an R16 matrix (dtype r16) of `rows` rows of n values,
// as plain blocks (BlockQ8_0 / BlockQ4_0).
void blocks_of_row(DType r16, const void* w, int64_t rows, int64_t n, int64_t r, int64_t b0, int64_t count,
                   void* dst);
// The same row dequantized to F32.
void dequantize_row_r16(DType r16, const void* w, int64_t rows, int64_t n, int64_t r, float* dst);

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
