#include "tensor/quant.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace purellm {

namespace {

// std::roundf (halfway cases away from zero) for |v| < 2^31, inline: without SSE4.1 roundf is
// a libm call, which made quantizing at load 4x slower than the rest of it.
int32_t round_away(float v) {
  const auto t = static_cast<int32_t>(v);        // toward zero
  const float frac = v - static_cast<float>(t);  // exact: v and t share their integer part
  return t + (frac >= 0.5f) - (frac <= -0.5f);
}

}  // namespace

// ggml's quantize_row_q8_0_ref: d = amax / 127, q = roundf(x * (1 / d)).
void quantize_row_q8_0(const float* src, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ8_0*>(dst);
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    const float* x = src + b * kQuantBlock;
    float amax = 0.0f;
    for (int i = 0; i < kQuantBlock; ++i) amax = std::max(amax, std::fabs(x[i]));  // passes NaN over, as fmax
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = f32_to_f16(d);
    for (int i = 0; i < kQuantBlock; ++i) y[b].q[i] = static_cast<int8_t>(round_away(x[i] * id));
  }
}

// ggml's quantize_row_q4_0_ref: the signed value of largest magnitude maps to -8,
// q = min(15, (int8_t)(x * (1 / d) + 8.5)).
void quantize_row_q4_0(const float* src, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ4_0*>(dst);
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    const float* x = src + b * kQuantBlock;
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < kQuantBlock; ++i)
      if (std::fabs(x[i]) > amax) {
        amax = std::fabs(x[i]);
        max = x[i];
      }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = f32_to_f16(d);
    for (int j = 0; j < kQuantBlock / 2; ++j) {
      const int lo = std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * id + 8.5f)));
      const int hi = std::min(15, static_cast<int>(static_cast<int8_t>(x[j + 16] * id + 8.5f)));
      y[b].q[j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

void dequantize_row_q8_0(const void* src, float* dst, int64_t n) {
  const auto* y = static_cast<const BlockQ8_0*>(src);
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    const float d = f16_to_f32(y[b].d);
    for (int i = 0; i < kQuantBlock; ++i) dst[b * kQuantBlock + i] = d * static_cast<float>(y[b].q[i]);
  }
}

void dequantize_row_q4_0(const void* src, float* dst, int64_t n) {
  const auto* y = static_cast<const BlockQ4_0*>(src);
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    const float d = f16_to_f32(y[b].d);
    float* o = dst + b * kQuantBlock;
    for (int j = 0; j < kQuantBlock / 2; ++j) {
      o[j] = d * static_cast<float>((y[b].q[j] & 0x0f) - 8);
      o[j + 16] = d * static_cast<float>((y[b].q[j] >> 4) - 8);
    }
  }
}

DType interleaved_of(DType plain) { return plain == DType::Q8_0 ? DType::Q8_0_R16 : DType::Q4_0_R16; }
DType plain_of(DType interleaved) { return interleaved == DType::Q8_0_R16 ? DType::Q8_0 : DType::Q4_0; }

namespace {

// The bytes of one plain block (bb), its quants in 4-byte pieces, and what XOR stores them.
struct R16Shape {
  int64_t bb, pieces;
  uint8_t flip;
  explicit R16Shape(DType plain)
      : bb(traits(plain).block_bytes), pieces((bb - 2) / 4), flip(plain == DType::Q8_0 ? 0x80 : 0x00) {}
};

void flip_bytes(uint8_t* p, int64_t n, uint8_t flip) {
  for (int64_t i = 0; i < n; ++i) p[i] ^= flip;
}

// Block b of row i of the group at `group`, back into a plain block at dst.
void gather_block(const R16Shape& s, const uint8_t* group, int64_t b, int64_t i, uint8_t* dst) {
  const uint8_t* p = group + b * kR16 * s.bb;
  std::memcpy(dst, p + 2 * i, 2);
  for (int64_t c = 0; c < s.pieces; ++c) std::memcpy(dst + 2 + 4 * c, p + 32 + c * 64 + i * 4, 4);
  flip_bytes(dst + 2, s.bb - 2, s.flip);
}

}  // namespace

void interleave_rows(DType plain, const void* src, void* dst, int64_t rows, int64_t n) {
  const R16Shape s(plain);
  const int64_t nb = n / kQuantBlock, groups = rows / kR16, group_bytes = kR16 * nb * s.bb;
  const auto* in = static_cast<const uint8_t*>(src);
  auto* out = static_cast<uint8_t*>(dst);
  std::vector<uint8_t> group(static_cast<size_t>(group_bytes));
  for (int64_t g = 0; g < groups; ++g) {
    std::memcpy(group.data(), in + g * group_bytes, group.size());
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* o = out + g * group_bytes + b * kR16 * s.bb;
      for (int64_t r = 0; r < kR16; ++r) {
        const uint8_t* blk = group.data() + (r * nb + b) * s.bb;
        std::memcpy(o + 2 * r, blk, 2);
        for (int64_t c = 0; c < s.pieces; ++c) std::memcpy(o + 32 + c * 64 + r * 4, blk + 2 + 4 * c, 4);
      }
      flip_bytes(o + 32, kR16 * (s.bb - 2), s.flip);
    }
  }
  std::memmove(out + groups * group_bytes, in + groups * group_bytes,  // the tail rows, as they are
               static_cast<size_t>((rows - groups * kR16) * nb * s.bb));
}

void blocks_of_row(DType r16, const void* w, int64_t rows, int64_t n, int64_t r, int64_t b0, int64_t count,
                   void* dst) {
  const R16Shape s(plain_of(r16));
  const int64_t nb = n / kQuantBlock;
  const auto* base = static_cast<const uint8_t*>(w);
  auto* out = static_cast<uint8_t*>(dst);
  if (r >= rows / kR16 * kR16) {  // a tail row: plain
    std::memcpy(out, base + (r * nb + b0) * s.bb, static_cast<size_t>(count * s.bb));
    return;
  }
  const uint8_t* group = base + (r / kR16) * kR16 * nb * s.bb;
  for (int64_t b = 0; b < count; ++b) gather_block(s, group, b0 + b, r % kR16, out + b * s.bb);
}

void dequantize_row_r16(DType r16, const void* w, int64_t rows, int64_t n, int64_t r, float* dst) {
  alignas(8) uint8_t blocks[8 * sizeof(BlockQ8_0)];  // 8 blocks at a time
  const DType plain = plain_of(r16);
  for (int64_t k0 = 0; k0 < n; k0 += 8 * kQuantBlock) {
    const int64_t m = std::min<int64_t>(8 * kQuantBlock, n - k0);
    blocks_of_row(r16, w, rows, n, r, k0 / kQuantBlock, m / kQuantBlock, blocks);
    (plain == DType::Q8_0 ? dequantize_row_q8_0 : dequantize_row_q4_0)(blocks, dst + k0, m);
  }
}

void convert_row_from_f32(DType to, const float* src, void* dst, int64_t n) {
  if (traits(to).block_elems > 1 && n % kQuantBlock)
    throw std::invalid_argument("cannot quantize a row of " + std::to_string(n) + " values to " +
                                std::string(dtype_name(to)) + " (needs a multiple of 32)");
  switch (to) {
    case DType::F32:
      for (int64_t i = 0; i < n; ++i) static_cast<float*>(dst)[i] = src[i];
      return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = f32_to_f16(src[i]);
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = f32_to_bf16(src[i]);
      return;
    case DType::Q8_0: return quantize_row_q8_0(src, dst, n);
    case DType::Q4_0: return quantize_row_q4_0(src, dst, n);
    default: throw std::invalid_argument("cannot convert weights to " + std::string(dtype_name(to)));
  }
}

namespace {
size_t round64(size_t n) { return (n + 63) / 64 * 64; }
}  // namespace

size_t QuantizedActs::bytes_for(int64_t T, int64_t K) {
  const auto blocks = static_cast<size_t>(T * (K / kQuantBlock));
  return round64(static_cast<size_t>(T * K)) + round64(blocks * sizeof(float)) + round64(blocks * sizeof(int32_t));
}

QuantizedActs QuantizedActs::carve(void* memory, int64_t T, int64_t K) {
  const auto blocks = static_cast<size_t>(T * (K / kQuantBlock));
  auto* p = static_cast<char*>(memory);
  QuantizedActs a;
  a.K = K;
  a.q = reinterpret_cast<int8_t*>(p);
  p += round64(static_cast<size_t>(T * K));
  a.d = reinterpret_cast<float*>(p);
  p += round64(blocks * sizeof(float));
  a.s = reinterpret_cast<int32_t*>(p);
  return a;
}

namespace {

// The largest |x[i]| of one block, and q[i] = x[i] * id rounded half to even (std::nearbyint
// in the default rounding mode), returning the sum of the q[i]. SSE2's cvtps2dq and NEON's
// fcvtns round exactly so, four values an instruction, where nearbyint is a library call per
// value; the products x[i] * id are the same float multiplies on every path.
#if defined(__SSE2__)
float block_amax(const float* x) {
  const __m128 sign = _mm_set1_ps(-0.0f);
  __m128 m = _mm_setzero_ps();
  for (int i = 0; i < kQuantBlock; i += 4) m = _mm_max_ps(m, _mm_andnot_ps(sign, _mm_loadu_ps(x + i)));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
}
int32_t round_block(const float* x, float id, int8_t* q) {
  __m128i sum = _mm_setzero_si128();
  for (int i = 0; i < kQuantBlock; i += 8) {
    const __m128i a = _mm_cvtps_epi32(_mm_mul_ps(_mm_loadu_ps(x + i), _mm_set1_ps(id)));
    const __m128i b = _mm_cvtps_epi32(_mm_mul_ps(_mm_loadu_ps(x + i + 4), _mm_set1_ps(id)));
    sum = _mm_add_epi32(sum, _mm_add_epi32(a, b));
    const __m128i w = _mm_packs_epi32(a, b);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + i), _mm_packs_epi16(w, w));
  }
  sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, _MM_SHUFFLE(1, 0, 3, 2)));
  sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(sum);
}
#elif defined(__aarch64__)
float block_amax(const float* x) {
  float32x4_t m = vdupq_n_f32(0.0f);
  for (int i = 0; i < kQuantBlock; i += 4) m = vmaxq_f32(m, vabsq_f32(vld1q_f32(x + i)));
  return vmaxvq_f32(m);
}
int32_t round_block(const float* x, float id, int8_t* q) {
  int32x4_t sum = vdupq_n_s32(0);
  for (int i = 0; i < kQuantBlock; i += 8) {
    const int32x4_t a = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + i), id));
    const int32x4_t b = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + i + 4), id));
    sum = vaddq_s32(sum, vaddq_s32(a, b));
    const int16x8_t w = vcombine_s16(vqmovn_s32(a), vqmovn_s32(b));
    vst1_s8(q + i, vqmovn_s16(w));
  }
  return vaddvq_s32(sum);
}
#else
float block_amax(const float* x) {
  float amax = 0.0f;
  for (int i = 0; i < kQuantBlock; ++i) amax = std::fmax(amax, std::fabs(x[i]));
  return amax;
}
int32_t round_block(const float* x, float id, int8_t* q) {
  int32_t sum = 0;
  for (int i = 0; i < kQuantBlock; ++i) {
    q[i] = static_cast<int8_t>(std::nearbyint(x[i] * id));
    sum += q[i];
  }
  return sum;
}
#endif

}  // namespace

void quantize_acts_row(const float* x, QuantizedActs& a, int64_t t) {
  const int64_t nb = a.K / kQuantBlock;
  for (int64_t b = 0; b < nb; ++b) {
    const float db = block_amax(x + b * kQuantBlock) / 127.0f;
    const float id = db != 0.0f ? 1.0f / db : 0.0f;
    a.s[t * nb + b] = round_block(x + b * kQuantBlock, id, a.q + t * a.K + b * kQuantBlock);
    a.d[t * nb + b] = db;
  }
}

}  // namespace purellm
