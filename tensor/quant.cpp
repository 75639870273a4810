#include "tensor/quant.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace purellm {

// ggml's quantize_row_q8_0_ref: d = amax / 127, q = roundf(x * (1 / d)).
void quantize_row_q8_0(const float* src, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ8_0*>(dst);
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    const float* x = src + b * kQuantBlock;
    float amax = 0.0f;
    for (int i = 0; i < kQuantBlock; ++i) amax = std::fmax(amax, std::fabs(x[i]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = f32_to_f16(d);
    for (int i = 0; i < kQuantBlock; ++i) y[b].q[i] = static_cast<int8_t>(std::roundf(x[i] * id));
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

// Round half to even (std::nearbyint in the default rounding mode), the rounding of the SIMD
// float -> int conversions, so a vector version of this loop could match it bit for bit.
void quantize_acts_row(const float* x, QuantizedActs& a, int64_t t) {
  const int64_t nb = a.K / kQuantBlock;
  int8_t* q = a.q + t * a.K;
  float* d = a.d + t * nb;
  int32_t* s = a.s + t * nb;
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + b * kQuantBlock;
    float amax = 0.0f;
    for (int i = 0; i < kQuantBlock; ++i) amax = std::fmax(amax, std::fabs(xb[i]));
    const float db = amax / 127.0f;
    const float id = db != 0.0f ? 1.0f / db : 0.0f;
    int32_t sum = 0;
    for (int i = 0; i < kQuantBlock; ++i) {
      const auto v = static_cast<int8_t>(std::nearbyint(xb[i] * id));
      q[b * kQuantBlock + i] = v;
      sum += v;
    }
    d[b] = db;
    s[b] = sum;
  }
}

}  // namespace purellm
