// The SIMD kernels, written once against xsimd's batch<float, A> and instantiated per
// instruction set by kernels_<isa>.cpp (see kernels.hpp for the table and its conventions).
//
// Rules for this file, because it is compiled several times with different -m flags into one
// binary: every function is a template on the arch A (so each instruction set gets its own
// symbols) and nothing here calls a non-template inline function of another header (the
// linker would keep one copy of it, maybe the AVX-512 one, and a pre-AVX CPU would crash;
// compiler builtins such as __builtin_sqrtf are fine).
// Tails shorter than a vector go through a zero-padded buffer so they run the same vector
// math as the body.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include <xsimd/xsimd.hpp>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

#include "tensor/cpu/kernels.hpp"
#include "tensor/dtype.hpp"

namespace purellm::cpu::simd {

template <class A>
using V = xsimd::batch<float, A>;
template <class A>
constexpr int64_t kLanes = static_cast<int64_t>(V<A>::size);
constexpr int kTileRows = 6;  // mr of the GEMM tile; nr is two vectors

// Element storage of a weight dtype: float for F32, the raw 16 bits for F16 / BF16.
template <DType D>
using storage_t = std::conditional_t<D == DType::F32, float, uint16_t>;

// ---- loads ----------------------------------------------------------------------------------

// 16-bit values widened to 32-bit lanes (portable; the fast paths below use intrinsics).
template <class A>
xsimd::batch<uint32_t, A> widen_u16(const uint16_t* p) {
  alignas(64) uint32_t tmp[kLanes<A>];
  for (int64_t i = 0; i < kLanes<A>; ++i) tmp[i] = p[i];
  return xsimd::batch<uint32_t, A>::load_aligned(tmp);
}

// IEEE half bits (in 32-bit lanes) to float: shift exponent and mantissa into place, rebias by
// multiplying with 2^112 (exact, and it turns half subnormals into float normals), and keep
// infinities and NaNs.
template <class A>
V<A> f16_bits_to_f32(xsimd::batch<uint32_t, A> h) {
  using U = xsimd::batch<uint32_t, A>;
  const U sign = (h & U(0x8000u)) << 16;
  const U body = (h & U(0x7fffu)) << 13;
  const U scaled = xsimd::bitwise_cast<U>(xsimd::bitwise_cast<V<A>>(body) * V<A>(0x1p112f));
  const U mag = xsimd::select((h & U(0x7c00u)) == U(0x7c00u), body | U(0x7f800000u), scaled);
  return xsimd::bitwise_cast<V<A>>(mag | sign);
}

template <class A>
V<A> load_f16(const uint16_t* p) {
#if defined(__AVX512F__)
  if constexpr (kLanes<A> == 16) return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#endif
#if defined(__F16C__)
  if constexpr (kLanes<A> == 8) return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#endif
#if defined(__aarch64__)
  if constexpr (kLanes<A> == 4) return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
#endif
#if defined(__SSE2__)
  if constexpr (std::is_same_v<A, xsimd::sse2>) {
    const __m128i h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return f16_bits_to_f32<A>(_mm_unpacklo_epi16(h, _mm_setzero_si128()));
  }
#endif
  return f16_bits_to_f32<A>(widen_u16<A>(p));
}

// bfloat16 is the top half of a float: widen and shift left by 16.
template <class A>
V<A> load_bf16(const uint16_t* p) {
#if defined(__AVX512F__)
  if constexpr (kLanes<A> == 16) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  }
#endif
#if defined(__AVX2__)
  if constexpr (kLanes<A> == 8) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  }
#endif
#if defined(__aarch64__)
  if constexpr (kLanes<A> == 4) return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16));
#endif
#if defined(__SSE2__)
  if constexpr (std::is_same_v<A, xsimd::sse2>) {
    const __m128i h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return _mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), h));
  }
#endif
  return xsimd::bitwise_cast<V<A>>(widen_u16<A>(p) << 16);
}

// n floats to F16 (round to nearest even, as f32_to_f16).
template <class A>
void f32_to_f16_row(uint16_t* dst, const float* src, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  if constexpr (kLanes<A> == 16)
    for (; i + 16 <= n; i += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                          _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
#if defined(__F16C__)
  if constexpr (kLanes<A> == 8)
    for (; i + 8 <= n; i += 8)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                       _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
#if defined(__aarch64__)
  for (; i + 4 <= n; i += 4) vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(src + i))));
#endif
  for (; i < n; ++i) dst[i] = f32_to_f16(src[i]);
}

// kLanes<A> consecutive values of weight dtype D, as floats.
template <class A, DType D>
V<A> load(const storage_t<D>* p) {
  if constexpr (D == DType::F32) return V<A>::load_unaligned(p);
  else if constexpr (D == DType::F16) return load_f16<A>(p);
  else return load_bf16<A>(p);
}

// The first `count` (< kLanes) values at p, zero-padded to a full vector.
template <class A, DType D = DType::F32>
V<A> load_partial(const storage_t<D>* p, int64_t count) {
  alignas(64) storage_t<D> buf[kLanes<A>] = {};
  std::memcpy(buf, p, static_cast<size_t>(count) * sizeof(storage_t<D>));
  return load<A, D>(buf);
}

template <class A>
void store_partial(float* p, V<A> v, int64_t count) {
  alignas(64) float buf[kLanes<A>];
  v.store_aligned(buf);
  std::memcpy(p, buf, static_cast<size_t>(count) * sizeof(float));
}

template <class A>
float hmax(V<A> v) {
  alignas(64) float buf[kLanes<A>];
  v.store_aligned(buf);
  float m = buf[0];
  for (int64_t i = 1; i < kLanes<A>; ++i) m = buf[i] > m ? buf[i] : m;
  return m;
}

// ---- conversions and elementwise --------------------------------------------------------------

template <class A, DType D>
void convert_row(float* dst, const uint16_t* src, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes<A> <= n; i += kLanes<A>) load<A, D>(src + i).store_unaligned(dst + i);
  if (i < n) store_partial<A>(dst + i, load_partial<A, D>(src + i, n - i), n - i);
}

// out[i] = f(x[i]) over n values.
template <class A, class F>
void map1(float* out, const float* x, int64_t n, F f) {
  int64_t i = 0;
  for (; i + kLanes<A> <= n; i += kLanes<A>) f(V<A>::load_unaligned(x + i)).store_unaligned(out + i);
  if (i < n) store_partial<A>(out + i, f(load_partial<A>(x + i, n - i)), n - i);
}

// out[i] = f(a[i], b[i]) over n values.
template <class A, class F>
void map2(float* out, const float* a, const float* b, int64_t n, F f) {
  int64_t i = 0;
  for (; i + kLanes<A> <= n; i += kLanes<A>)
    f(V<A>::load_unaligned(a + i), V<A>::load_unaligned(b + i)).store_unaligned(out + i);
  if (i < n) store_partial<A>(out + i, f(load_partial<A>(a + i, n - i), load_partial<A>(b + i, n - i)), n - i);
}

template <class A>
void add(float* out, const float* a, const float* b, int64_t n) {
  map2<A>(out, a, b, n, [](V<A> u, V<A> v) { return u + v; });
}

template <class A>
void mul(float* out, const float* a, const float* b, int64_t n) {
  map2<A>(out, a, b, n, [](V<A> u, V<A> v) { return u * v; });
}

template <class A>
void scale(float* out, const float* x, float s, int64_t n) {
  map1<A>(out, x, n, [s](V<A> v) { return V<A>(s) * v; });
}

template <class A>
void add_scaled(float* out, const float* x, float s, int64_t n) {
  map2<A>(out, out, x, n, [s](V<A> o, V<A> v) { return xsimd::fma(V<A>(s), v, o); });
}

template <class A>
void mul_add(float* out, const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes<A> <= n; i += kLanes<A>) {
    const V<A> o = V<A>::load_unaligned(out + i);
    xsimd::fma(V<A>::load_unaligned(a + i), V<A>::load_unaligned(b + i), o).store_unaligned(out + i);
  }
  for (; i < n; ++i) out[i] += a[i] * b[i];
}

// gelu(x) = x/2 * (1 + erf(x/sqrt2)) = x/2 * erfc(-x/sqrt2): the erfc form keeps the tiny
// negative tail accurate instead of cancelling 1 + erf(x) to zero.
template <class A>
void gelu(float* out, const float* x, int64_t n) {
  map1<A>(out, x, n, [](V<A> v) {
    return V<A>(0.5f) * v * xsimd::erfc(v * V<A>(-0.70710678118654752f));
  });
}

// gelu_tanh(x) = x/2 * (1 + tanh(u)) = x * sigmoid(2u), u = sqrt(2/pi) * (x + 0.044715 x^3).
template <class A>
void gelu_tanh(float* out, const float* x, int64_t n) {
  map1<A>(out, x, n, [](V<A> v) {
    const V<A> u = V<A>(0.79788456080286536f) * xsimd::fma(V<A>(0.044715f) * v, v * v, v);
    return v / (V<A>(1.0f) + xsimd::exp(V<A>(-2.0f) * u));
  });
}

template <class A>
void relu(float* out, const float* x, int64_t n) {
  map1<A>(out, x, n, [](V<A> v) { return xsimd::max(v, V<A>(0.0f)); });
}

template <class A>
V<A> silu_v(V<A> v) {
  return v / (V<A>(1.0f) + xsimd::exp(-v));
}

template <class A>
void silu(float* out, const float* x, int64_t n) {
  map1<A>(out, x, n, silu_v<A>);
}

template <class A>
void silu_mul(float* out, const float* gate, const float* up, int64_t n) {
  map2<A>(out, gate, up, n, [](V<A> g, V<A> u) { return silu_v<A>(g) * u; });
}

// ---- row reductions ---------------------------------------------------------------------------

// The bandwidth probe's read: x cut into four quarters summed in lockstep, one vector of each per
// step. A core reads memory fastest as a few long sequential streams (see gemv): four streams
// read 25-30% faster than one on Zen 5, so one stream would understate the limit.
template <class A>
float sum(const float* x, int64_t n) {
  constexpr int64_t L = kLanes<A>;
  const int64_t q = n / (4 * L) * L;  // vectors per quarter
  V<A> s0(0.0f), s1(0.0f), s2(0.0f), s3(0.0f);
  for (int64_t i = 0; i < q; i += L) {
    s0 += V<A>::load_unaligned(x + i);
    s1 += V<A>::load_unaligned(x + q + i);
    s2 += V<A>::load_unaligned(x + 2 * q + i);
    s3 += V<A>::load_unaligned(x + 3 * q + i);
  }
  int64_t i = 4 * q;
  for (; i + L <= n; i += L) s0 += V<A>::load_unaligned(x + i);
  float s = xsimd::hadd((s0 + s1) + (s2 + s3));
  for (; i < n; ++i) s += x[i];
  return s;
}

// sum over i of (x[i] - c)^2
template <class A>
float sum_sq_dev(const float* x, float c, int64_t n) {
  const V<A> vc(c);
  V<A> s0(0.0f), s1(0.0f);
  int64_t i = 0;
  for (; i + 2 * kLanes<A> <= n; i += 2 * kLanes<A>) {
    const V<A> d0 = V<A>::load_unaligned(x + i) - vc, d1 = V<A>::load_unaligned(x + i + kLanes<A>) - vc;
    s0 = xsimd::fma(d0, d0, s0);
    s1 = xsimd::fma(d1, d1, s1);
  }
  for (; i + kLanes<A> <= n; i += kLanes<A>) {
    const V<A> d = V<A>::load_unaligned(x + i) - vc;
    s0 = xsimd::fma(d, d, s0);
  }
  float s = xsimd::hadd(s0 + s1);
  for (; i < n; ++i) s += (x[i] - c) * (x[i] - c);
  return s;
}

template <class A>
float max(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  int64_t i = 0;
  if (n >= kLanes<A>) {
    V<A> vm = V<A>::load_unaligned(x);
    for (i = kLanes<A>; i + kLanes<A> <= n; i += kLanes<A>) vm = xsimd::max(vm, V<A>::load_unaligned(x + i));
    m = hmax<A>(vm);
  }
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// Two passes (mean, then variance around it) like the reference, in float.
template <class A>
void layernorm(float* out, const float* x, const float* w, const float* b, float eps, int64_t n) {
  const float mean = sum<A>(x, n) / static_cast<float>(n);
  const float var = sum_sq_dev<A>(x, mean, n) / static_cast<float>(n);
  const float inv = 1.0f / __builtin_sqrtf(var + eps);
  const V<A> vinv(inv), vm(mean);
  int64_t i = 0;
  for (; i + kLanes<A> <= n; i += kLanes<A>) {
    const V<A> y = (V<A>::load_unaligned(x + i) - vm) * vinv * V<A>::load_unaligned(w + i);
    (b ? y + V<A>::load_unaligned(b + i) : y).store_unaligned(out + i);
  }
  for (; i < n; ++i) out[i] = (x[i] - mean) * inv * w[i] + (b ? b[i] : 0.0f);
}

template <class A>
void rmsnorm(float* out, const float* x, const float* w, float eps, int64_t n) {
  const float ss = sum_sq_dev<A>(x, 0.0f, n);
  const float inv = 1.0f / __builtin_sqrtf(ss / static_cast<float>(n) + eps);
  map2<A>(out, x, w, n, [inv](V<A> v, V<A> wv) { return v * V<A>(inv) * wv; });
}

// out[i] = exp(x[i] - shift) for i < n (out may equal x); returns their sum.
template <class A>
float exp_minus(float* out, const float* x, float shift, int64_t n) {
  const V<A> m(shift);
  V<A> vs(0.0f);
  int64_t i = 0;
  for (; i + kLanes<A> <= n; i += kLanes<A>) {
    const V<A> e = xsimd::exp(V<A>::load_unaligned(x + i) - m);
    e.store_unaligned(out + i);
    vs += e;
  }
  float s = xsimd::hadd(vs);
  if (i < n) {
    store_partial<A>(out + i, xsimd::exp(load_partial<A>(x + i, n - i) - m), n - i);
    for (; i < n; ++i) s += out[i];
  }
  return s;
}

// out[i] = exp(x[i] - max x) for i < n (out may equal x); returns their sum. Softmax, before
// the division (attention divides its weighted sum instead).
template <class A>
float exp_shifted(float* out, const float* x, int64_t n) {
  return exp_minus<A>(out, x, max<A>(x, n), n);
}

// One block of a row of scores in FlashAttention's online softmax (Kernels::online_softmax).
template <class A>
float online_softmax(float* s, int64_t n, float* m, float* l) {
  const float m_new = std::max(*m, max<A>(s, n));
  const float factor = std::exp(*m - m_new);  // 0 while *m is -inf (no key seen yet)
  *l = *l * factor + exp_minus<A>(s, s, m_new, n);
  *m = m_new;
  return factor;
}

template <class A>
void softmax(float* out, const float* x, int64_t n) {
  scale<A>(out, out, 1.0f / exp_shifted<A>(out, x, n), n);
}

// First index of the largest value; falls back to a plain scan when no lane equals the
// vector maximum (NaNs), so the answer always matches std::max_element.
template <class A>
int64_t argmax(const float* x, int64_t n) {
  const float m = max<A>(x, n);
  int64_t i = 0;
  for (; i + kLanes<A> <= n; i += kLanes<A>)
    if (xsimd::any(V<A>::load_unaligned(x + i) == V<A>(m))) break;
  for (; i < n; ++i)
    if (x[i] == m) return i;
  int64_t best = 0;
  for (int64_t j = 1; j < n; ++j)
    if (x[best] < x[j]) best = j;
  return best;
}

template <class A>
void rope(float* v, const float* c, const float* s, int64_t half) {
  float* u = v + half;
  int64_t i = 0;
  for (; i + kLanes<A> <= half; i += kLanes<A>) {
    const V<A> a = V<A>::load_unaligned(v + i), b = V<A>::load_unaligned(u + i);
    const V<A> cv = V<A>::load_unaligned(c + i), sv = V<A>::load_unaligned(s + i);
    (a * cv - b * sv).store_unaligned(v + i);
    (b * cv + a * sv).store_unaligned(u + i);
  }
  for (; i < half; ++i) {
    const float a = v[i], b = u[i];
    v[i] = a * c[i] - b * s[i];
    u[i] = b * c[i] + a * s[i];
  }
}

// ---- FMA throughput probe ---------------------------------------------------------------------

template <class A>
double fma_loop(int64_t iters, float* sink) {
  V<A> acc[kFmaChains];
  for (int c = 0; c < kFmaChains; ++c) acc[c] = V<A>(0.001f * static_cast<float>(c));
  const V<A> m(0.999f), a(0.001f);
  for (int64_t i = 0; i < iters; ++i)
    for (int c = 0; c < kFmaChains; ++c) acc[c] = xsimd::fma(acc[c], m, a);
  V<A> total(0.0f);
  for (int c = 0; c < kFmaChains; ++c) total += acc[c];
  *sink = xsimd::hadd(total);
  return 2.0 * kFmaChains * static_cast<double>(kLanes<A>) * static_cast<double>(iters);
}

// ---- GEMV (decode) ----------------------------------------------------------------------------

// How far ahead of each stream gemv prefetches: 1 KiB read 8-16% faster than none and than 2 KiB
// (F32, F16, BF16; GPT-2 and TinyLlama shapes, 2 threads, Zen 5).
constexpr int64_t kGemvPrefetchBytes = 1024;

// y[r * ldy] = x . W[r] (+ bias[r * ldy]) for kRows rows that lie ldw apart; the x vector is
// loaded once per step for all rows, and each row keeps two accumulators so the FMA chains
// overlap. Each row's stream is prefetched kGemvPrefetchBytes ahead (past the row's end that is
// the next row of its block, which is where the stream goes next).
template <class A, DType D, int kRows>
void gemv_rows(float* y, int64_t ldy, const float* x, const storage_t<D>* w, int64_t ldw, int64_t K,
               const float* bias) {
  constexpr int64_t L = kLanes<A>;
  constexpr int64_t kStepBytes = 2 * L * static_cast<int64_t>(sizeof(storage_t<D>));
  V<A> acc[kRows][2];
  for (int r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = V<A>(0.0f);
  int64_t k = 0;
  for (; k + 2 * L <= K; k += 2 * L) {
    const V<A> x0 = V<A>::load_unaligned(x + k), x1 = V<A>::load_unaligned(x + k + L);
    for (int r = 0; r < kRows; ++r) {
      const char* ahead = reinterpret_cast<const char*>(w + r * ldw + k) + kGemvPrefetchBytes;
      for (int64_t b = 0; b < kStepBytes; b += 64) __builtin_prefetch(ahead + b);
      acc[r][0] = xsimd::fma(x0, load<A, D>(w + r * ldw + k), acc[r][0]);
      acc[r][1] = xsimd::fma(x1, load<A, D>(w + r * ldw + k + L), acc[r][1]);
    }
  }
  for (; k < K; k += L) {
    const int64_t rem = K - k < L ? K - k : L;
    const V<A> xv = rem == L ? V<A>::load_unaligned(x + k) : load_partial<A>(x + k, rem);
    for (int r = 0; r < kRows; ++r) {
      const storage_t<D>* wr = w + r * ldw + k;
      acc[r][0] = xsimd::fma(xv, rem == L ? load<A, D>(wr) : load_partial<A, D>(wr, rem), acc[r][0]);
    }
  }
  for (int r = 0; r < kRows; ++r)
    y[r * ldy] = xsimd::hadd(acc[r][0] + acc[r][1]) + (bias ? bias[r * ldy] : 0.0f);
}

// Sequential streams each thread's decode kernels read side by side (gemv, qmatmul, qmatmul_r16).
constexpr int kStreams = 4;

// y = x W^T (+ bias) for N rows of W. One core reads memory fastest as a few long sequential
// streams: the rows are cut into kStreams contiguous blocks and row i of every block is summed
// together, so each block is read front to back across its row boundaries and the hardware
// prefetcher keeps running on all of them. Four streams per thread read 20-35% faster than four
// consecutive rows at a time (which restart four short streams every four rows) and than one
// row at a time (one stream), on GPT-2 and TinyLlama shapes (F32 and BF16, 2 threads, Zen 5);
// with the prefetch of gemv_rows they read 90-99% of the bandwidth probe's four-stream sum.
template <class A, DType D>
void gemv(float* y, const float* x, const storage_t<D>* w, int64_t ldw, int64_t K, int64_t N,
          const float* bias) {
  const int64_t q = N / kStreams;
  for (int64_t i = 0; i < q; ++i)
    gemv_rows<A, D, kStreams>(y + i, q, x, w + i * ldw, q * ldw, K, bias ? bias + i : nullptr);
  for (int64_t n = kStreams * q; n < N; ++n)
    gemv_rows<A, D, 1>(y + n, 1, x, w + n * ldw, ldw, K, bias ? bias + n : nullptr);
}

// ---- GEMM tile and packing (prefill) ----------------------------------------------------------

// c[6, nr] = (accumulate ? c : 0) + a^T b over kc steps, with nr = two vectors. Each step
// loads one packed row of W (two vectors) and broadcasts six x values: 12 accumulators.
template <class A>
void gemm_tile(float* c, int64_t ldc, const float* a, const float* b, int64_t kc, bool accumulate) {
  constexpr int64_t L = kLanes<A>, MR = kTileRows, NR = 2 * L;
  V<A> acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = V<A>(0.0f);
  for (int64_t k = 0; k < kc; ++k) {
    const V<A> b0 = V<A>::load_aligned(b + k * NR), b1 = V<A>::load_aligned(b + k * NR + L);
    for (int i = 0; i < MR; ++i) {
      const V<A> ai(a[k * MR + i]);
      acc[i][0] = xsimd::fma(ai, b0, acc[i][0]);
      acc[i][1] = xsimd::fma(ai, b1, acc[i][1]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    float* ci = c + i * ldc;
    if (accumulate) {
      acc[i][0] += V<A>::load_unaligned(ci);
      acc[i][1] += V<A>::load_unaligned(ci + L);
    }
    acc[i][0].store_unaligned(ci);
    acc[i][1].store_unaligned(ci + L);
  }
}

// dst[k, j] = W[j, k] as F32 for j < rows, 0 for rows <= j < nr.  dst: [kc, nr]
// In chunks of 64 columns: convert the nr row pieces into a small tile with whole-vector loads
// and stores, then write it out column by column (fixed trip counts the compiler unrolls).
template <class A, DType D>
void pack_w(float* dst, const storage_t<D>* w, int64_t ldw, int64_t rows, int64_t kc) {
  constexpr int64_t L = kLanes<A>, NR = 2 * L, kChunk = 64;
  alignas(64) float tile[NR][kChunk];
  for (int64_t k0 = 0; k0 < kc; k0 += kChunk) {
    const int64_t n = kc - k0 < kChunk ? kc - k0 : kChunk;
    for (int64_t j = 0; j < NR; ++j) {
      const storage_t<D>* src = w + j * ldw + k0;
      for (int64_t k = 0; k < kChunk; k += L) {
        const int64_t rem = n - k < L ? (n - k > 0 ? n - k : 0) : L;
        const V<A> v = j >= rows || rem == 0 ? V<A>(0.0f) : rem == L ? load<A, D>(src + k) : load_partial<A, D>(src + k, rem);
        v.store_aligned(&tile[j][k]);
      }
    }
    for (int64_t k = 0; k < n; ++k)
      for (int64_t j = 0; j < NR; ++j) dst[(k0 + k) * NR + j] = tile[j][k];
  }
}

// dst[k, i] = x[i, k] for i < rows, 0 for rows <= i < mr.  dst: [kc, mr]
template <class A>
void pack_x(float* dst, const float* x, int64_t ldx, int64_t rows, int64_t kc) {
  for (int64_t k = 0; k < kc; ++k)
    for (int64_t i = 0; i < kTileRows; ++i) dst[k * kTileRows + i] = i < rows ? x[i * ldx + k] : 0.0f;
}

// ---- quantized matmul (Q8_0 / Q4_0 weights, Q8 activations) ------------------------------------
//
// Integer dot products of one block (32 values) at a time, scaled by d_w * d_x and summed in
// float (see quant.hpp for the layouts). A tile is R rows of W times C tokens of x: the R rows
// are loaded once per block for all C tokens, each token's block once for all R rows.
//   AVX-512 VNNI: two blocks per 512-bit vector, vpdpbusd (u8 x s8 -> s32). Q8_0 uses
//                 ggml's sign trick |x| * (w * sign(x)); Q4_0 multiplies the unsigned nibbles
//                 0..15 by x and starts the sum at -8 * sum(x) (the block sums of QuantizedActs).
//   AVX2 (and AVX-512 without VNNI): one block per 256-bit vector, vpmaddubsw + vpmaddwd.
//   NEON: one block per two 128-bit vectors, widening multiplies (vmull_s8) and pairwise adds.
//   otherwise (SSE2): plain integer loops.
// These kernels use raw intrinsics only (no xsimd): A is a tag that gives each TU its own
// symbols, including the VNNI TU whose tag is not an xsimd arch.

template <class A>
float half_to_float(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#elif defined(__aarch64__)
  __fp16 v;
  std::memcpy(&v, &h, 2);
  return static_cast<float>(v);
#else
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t body = static_cast<uint32_t>(h & 0x7fffu) << 13;
  float f;
  uint32_t bits;
  if ((h & 0x7c00u) == 0x7c00u) {
    bits = body | 0x7f800000u;
  } else {
    std::memcpy(&f, &body, 4);
    f *= 0x1p112f;
    std::memcpy(&bits, &f, 4);
  }
  bits |= sign;
  std::memcpy(&f, &bits, 4);
  return f;
#endif
}

template <DType D>
constexpr int64_t kBlockBytes = D == DType::Q8_0 ? 34 : 18;

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
// Where the two blocks of a 512-bit vector sit, by 32-bit lane: Q8_0 [block 0 x 8 | block 1 x 8];
// Q4_0 [0 x 4 | 1 x 4 | 0 x 4 | 1 x 4], the order in which its nibbles unpack (low halves of
// both blocks, then high halves), so the weights need no shuffle per row (x is shuffled once).
template <DType D>
__m512i pair_lanes(__m128i two_values) {
  const __m512i idx = D == DType::Q8_0 ? _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0)
                                       : _mm512_set_epi32(1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0);
  return _mm512_permutexvar_epi32(idx, _mm512_castsi128_si512(two_values));
}
template <DType D>
__m512 pair_lanes(float a, float b) {
  return _mm512_castsi512_ps(pair_lanes<D>(_mm_castps_si128(_mm_set_ps(0.0f, 0.0f, b, a))));
}
#endif

template <class A, DType D, int R, int C>
void qtile(float* out, int64_t ldo, int64_t ldy, const QuantizedActs& x, int64_t t0, const uint8_t* w, int64_t ldw,
           int64_t ahead) {
  constexpr int64_t BB = kBlockBytes<D>;
  const int64_t K = x.K, nb = K / 32;
  const int8_t* xq = x.q + t0 * K;
  const float* xd = x.d + t0 * nb;
  [[maybe_unused]] const int32_t* xs = x.s + t0 * nb;
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  const __m512i zero = _mm512_setzero_si512();
  // Blocks b and b + 1; with `two` false, an odd last block in the lower half only (a compile-
  // time flag, so the main loop carries no test of it).
  const auto step = [&](int64_t b, auto two_blocks) {
    constexpr bool two = decltype(two_blocks)::value;
    __m512i wv[R];
    __m512 dw[R];
    for (int r = 0; r < R; ++r) {
      const uint8_t* p = w + r * ldw + b * BB;
      __builtin_prefetch(p + ahead);
      __builtin_prefetch(p + ahead + 64);
      const int h0 = p[0] | (p[1] << 8), h1 = two ? p[BB] | (p[BB + 1] << 8) : 0;  // F16 scales
      dw[r] = _mm512_castsi512_ps(pair_lanes<D>(_mm_castps_si128(_mm_cvtph_ps(_mm_cvtsi32_si128(h0 | (h1 << 16))))));
      if constexpr (D == DType::Q8_0) {
        const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2));
        const __m256i hi = two ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + BB + 2)) : _mm256_setzero_si256();
        wv[r] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
      } else {
        const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2));
        const __m128i hi = two ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + BB + 2)) : _mm_setzero_si128();
        const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);  // [bytes 0 | bytes 1]
        const __m256i m = _mm256_set1_epi8(0x0f);
        const __m256i l = _mm256_and_si256(v, m), h = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
        wv[r] = _mm512_inserti64x4(_mm512_castsi256_si512(l), h, 1);  // [lo0 lo1 hi0 hi1]
      }
    }
    for (int c = 0; c < C; ++c) {
      const int8_t* q = xq + c * K + b * 32;
      __m512i xv = two ? _mm512_loadu_si512(q)
                       : _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)));
      if constexpr (D == DType::Q4_0) xv = _mm512_shuffle_i64x2(xv, xv, _MM_SHUFFLE(3, 1, 2, 0));  // as the nibbles
      const float* dxc = xd + c * nb + b;
      const __m512 dx = pair_lanes<D>(dxc[0], two ? dxc[1] : 0.0f);
      if constexpr (D == DType::Q8_0) {
        const __mmask64 neg = _mm512_movepi8_mask(xv);
        const __m512i ax = _mm512_abs_epi8(xv);
        for (int r = 0; r < R; ++r) {
          const __m512i sw = _mm512_mask_sub_epi8(wv[r], neg, zero, wv[r]);
          const __m512i p = _mm512_dpbusd_epi32(zero, ax, sw);
          acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw[r], dx), acc[r][c]);
        }
      } else {
        const int32_t* s = xs + c * nb + b;
        const __m512i init = pair_lanes<D>(_mm_set_epi32(0, 0, two ? -s[1] : 0, -s[0]));
        for (int r = 0; r < R; ++r) {
          const __m512i p = _mm512_dpbusd_epi32(init, wv[r], xv);
          acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw[r], dx), acc[r][c]);
        }
      }
    }
  };
  int64_t b = 0;
  for (; b + 1 < nb; b += 2) step(b, std::true_type{});
  if (b < nb) step(b, std::false_type{});
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) out[c * ldo + r * ldy] = _mm512_reduce_add_ps(acc[r][c]);
#elif defined(__AVX2__)
  __m256 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < nb; ++b) {
    __m256i wv[R];
    float dw[R];
    for (int r = 0; r < R; ++r) {
      const uint8_t* p = w + r * ldw + b * BB;
      __builtin_prefetch(p + ahead);
      dw[r] = half_to_float<A>(static_cast<uint16_t>(p[0] | (p[1] << 8)));
      if constexpr (D == DType::Q8_0) {
        wv[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2));
      } else {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2));
        const __m128i m = _mm_set1_epi8(0x0f);
        wv[r] = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_and_si128(v, m)),
                                        _mm_and_si128(_mm_srli_epi16(v, 4), m), 1);
      }
    }
    for (int c = 0; c < C; ++c) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + c * K + b * 32));
      const float dx = xd[c * nb + b];
      if constexpr (D == DType::Q8_0) {
        const __m256i ax = _mm256_sign_epi8(xv, xv);
        for (int r = 0; r < R; ++r) {
          const __m256i p16 = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(wv[r], xv));  // |sums| <= 2 * 127 * 127
          const __m256i p = _mm256_madd_epi16(p16, ones);
          acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw[r] * dx), acc[r][c]);
        }
      } else {
        const __m256i s = _mm256_set1_epi32(xs[c * nb + b]);  // 8 lanes x sum(x) = 8 * sum(x)
        for (int r = 0; r < R; ++r) {
          const __m256i p = _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(wv[r], xv), ones), s);
          acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw[r] * dx), acc[r][c]);
        }
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      const __m128 v = _mm_add_ps(_mm256_castps256_ps128(acc[r][c]), _mm256_extractf128_ps(acc[r][c], 1));
      const __m128 v2 = _mm_add_ps(v, _mm_movehl_ps(v, v));
      out[c * ldo + r * ldy] = _mm_cvtss_f32(_mm_add_ss(v2, _mm_shuffle_ps(v2, v2, 1)));
    }
#elif defined(__aarch64__)
  float32x4_t acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = vdupq_n_f32(0.0f);
  for (int64_t b = 0; b < nb; ++b) {
    int8x16_t w0[R], w1[R];
    float dw[R];
    for (int r = 0; r < R; ++r) {
      const uint8_t* p = w + r * ldw + b * BB;
      __builtin_prefetch(p + ahead);
      dw[r] = half_to_float<A>(static_cast<uint16_t>(p[0] | (p[1] << 8)));
      if constexpr (D == DType::Q8_0) {
        w0[r] = vld1q_s8(reinterpret_cast<const int8_t*>(p + 2));
        w1[r] = vld1q_s8(reinterpret_cast<const int8_t*>(p + 18));
      } else {
        const uint8x16_t v = vld1q_u8(p + 2);
        w0[r] = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0f))), vdupq_n_s8(8));
        w1[r] = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), vdupq_n_s8(8));
      }
    }
    for (int c = 0; c < C; ++c) {
      const int8_t* q = xq + c * K + b * 32;
      const int8x16_t x0 = vld1q_s8(q), x1 = vld1q_s8(q + 16);
      const float dx = xd[c * nb + b];
      for (int r = 0; r < R; ++r) {
        const int16x8_t p0 = vmlal_high_s8(vmull_s8(vget_low_s8(w0[r]), vget_low_s8(x0)), w0[r], x0);
        const int16x8_t p1 = vmlal_high_s8(vmull_s8(vget_low_s8(w1[r]), vget_low_s8(x1)), w1[r], x1);
        const int32x4_t s = vpadalq_s16(vpaddlq_s16(p0), p1);
        acc[r][c] = vfmaq_n_f32(acc[r][c], vcvtq_f32_s32(s), dw[r] * dx);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) out[c * ldo + r * ldy] = vaddvq_f32(acc[r][c]);
#else
  (void)xs;
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      float acc = 0.0f;
      const uint8_t* row = w + r * ldw;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* p = row + b * BB;
        const int8_t* q = xq + c * K + b * 32;
        int32_t isum = 0;
        if constexpr (D == DType::Q8_0) {
          for (int i = 0; i < 32; ++i) isum += static_cast<int8_t>(p[2 + i]) * q[i];
        } else {
          for (int j = 0; j < 16; ++j) isum += ((p[2 + j] & 0x0f) - 8) * q[j] + ((p[2 + j] >> 4) - 8) * q[j + 16];
        }
        acc += half_to_float<A>(static_cast<uint16_t>(p[0] | (p[1] << 8))) * xd[c * nb + b] * static_cast<float>(isum);
      }
      out[c * ldo + r * ldy] = acc;
    }
#endif
}

// pack_w for quantized W, dequantized: dst [kc, NR] <- W[0:rows, 0:kc] transposed, where W's
// rows hold blocks of 32 and are ldw bytes apart; rows < NR are zero-padded. kc % 32 == 0.
// The values d * q are exact in F32 (11-bit scale times a 7-bit integer).
template <class A, DType D>
void pack_w_quant(float* dst, const uint8_t* w, int64_t ldw, int64_t rows, int64_t kc) {
  constexpr int64_t NR = 2 * kLanes<A>;
  alignas(64) float tile[NR][32];
  for (int64_t b = 0; b < kc / 32; ++b) {
    for (int64_t j = 0; j < NR; ++j) {
      if (j >= rows) {
        std::memset(tile[j], 0, sizeof tile[j]);
        continue;
      }
      const uint8_t* p = w + j * ldw + b * kBlockBytes<D>;
      const float d = half_to_float<A>(static_cast<uint16_t>(p[0] | (p[1] << 8)));
      if constexpr (D == DType::Q8_0) {
        for (int i = 0; i < 32; ++i) tile[j][i] = d * static_cast<float>(static_cast<int8_t>(p[2 + i]));
      } else {  // low nibbles are values 0..15, high nibbles 16..31 (two loops the compiler vectorizes)
        for (int i = 0; i < 16; ++i) tile[j][i] = d * static_cast<float>((p[2 + i] & 0x0f) - 8);
        for (int i = 0; i < 16; ++i) tile[j][i + 16] = d * static_cast<float>((p[2 + i] >> 4) - 8);
      }
    }
    for (int i = 0; i < 32; ++i)
      for (int64_t j = 0; j < NR; ++j) dst[(b * 32 + i) * NR + j] = tile[j][i];
  }
}

// Tile sizes: R rows of W x C tokens, what the registers hold (16 vector registers for AVX2
// and SSE2, 32 for AVX-512 and NEON). Decode (T == 1) takes kStreams rows at a time, one from
// each of kStreams runs (see qmatmul): on AVX2 four streams read 25-37% faster (TinyLlama and
// GPT-2 Q8_0, whole-model decode, 2 threads) than eight consecutive rows per tile and than
// eight streams.
#if defined(__AVX512F__) && defined(__AVX512VNNI__)
constexpr int kQRows = 4, kQToks = 4;
#else
constexpr int kQRows = 4, kQToks = 2;
#endif

// How far ahead of its streams the quantized decode kernels prefetch (qmatmul, qmatmul_r16).
constexpr int64_t kQuantPrefetchBytes = 2048;

// out[t * ldo + n] for n < N, t < T: blocks of kQRows rows of W (kept in L1), each against all
// T tokens, kQToks at a time; each tile prefetches the same blocks of the next one. T == 1 is the
// decode GEMV: kStreams streams as in gemv (row i of each of kStreams contiguous runs of rows
// per tile), each prefetched kQuantPrefetchBytes ahead.
template <class A, DType D>
void qmatmul(float* out, int64_t ldo, const QuantizedActs& x, int64_t T, const uint8_t* w, int64_t ldw, int64_t N) {
  constexpr int R = kQRows, C = kQToks, S = kStreams;
  int64_t n = 0;
  if (T == 1) {
    const int64_t q = N / S;
    for (; n < q; ++n) qtile<A, D, S, 1>(out + n, ldo, q, x, 0, w + n * ldw, q * ldw, kQuantPrefetchBytes);
    n = S * q;
  }
  for (; n + R <= N; n += R) {
    int64_t t = 0;
    for (; t + C <= T; t += C) qtile<A, D, R, C>(out + t * ldo + n, ldo, 1, x, t, w + n * ldw, ldw, R * ldw);
    for (; t < T; ++t) qtile<A, D, R, 1>(out + t * ldo + n, ldo, 1, x, t, w + n * ldw, ldw, R * ldw);
  }
  for (; n < N; ++n) {
    int64_t t = 0;
    for (; t + C <= T; t += C) qtile<A, D, 1, C>(out + t * ldo + n, ldo, 1, x, t, w + n * ldw, ldw, ldw);
    for (; t < T; ++t) qtile<A, D, 1, 1>(out + t * ldo + n, ldo, 1, x, t, w + n * ldw, ldw, ldw);
  }
}

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
// The R16 layouts (quant.hpp): one group of 16 rows times C tokens. Per block, the group's quants
// become 8 vectors of unsigned bytes, lane = row, 4 bytes each: Q8_0's 8 pieces as stored (plus
// 128), Q4_0's 4 pieces split into low and high nibbles. The matching 4 bytes of each token's x,
// broadcast, meet them in vpdpbusd, so the 16 lanes end as the rows' block sums (started at
// -128 or -8 times sum(x), what the unsigned offsets added), scaled by the block's 16 scales at once.
template <DType D>
constexpr int64_t r16_x_offset(int j) {  // where in the block of x piece j's 4 values start
  return D == DType::Q8_0 ? 4 * j : (j % 2 ? 16 : 0) + 4 * (j / 2);
}

// S groups at once (decode: S streams, see qmatmul_r16): group s starts ldg bytes after group
// s - 1 and writes its 16 rows at out + s * ldy.
template <class A, DType D, int S, int C>
void qtile_r16(float* out, int64_t ldo, int64_t ldy, const QuantizedActs& x, int64_t t0, const uint8_t* group,
               int64_t ldg) {
  constexpr int64_t kGroupBlock = kR16 * kBlockBytes<D>;
  constexpr int32_t kOffset = D == DType::Q8_0 ? 128 : 8;
  const int64_t K = x.K, nb = K / 32;
  const int8_t* xq = x.q + t0 * K;
  const float* xd = x.d + t0 * nb;
  const int32_t* xs = x.s + t0 * nb;
  const __m512i mask = _mm512_set1_epi8(0x0f);
  const auto x4 = [](const int8_t* q) {  // 4 bytes of x in every lane
    int32_t v;
    std::memcpy(&v, q, 4);
    return _mm512_set1_epi32(v);
  };
  __m512 acc[S][C];
  for (int g = 0; g < S; ++g)
    for (int c = 0; c < C; ++c) acc[g][c] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    for (int g = 0; g < S; ++g) {
      const uint8_t* p = group + g * ldg + b * kGroupBlock;
      if constexpr (S > 1)
        for (int64_t i = 0; i < kGroupBlock; i += 64) __builtin_prefetch(p + kQuantPrefetchBytes + i);
      __m512i w[8];
      for (int j = 0; j < 8; ++j) {
        if constexpr (D == DType::Q8_0) {
          w[j] = _mm512_loadu_si512(p + 32 + 64 * j);
        } else if (j % 2 == 0) {
          const __m512i v = _mm512_loadu_si512(p + 32 + 32 * j);
          w[j] = _mm512_and_si512(v, mask);
          w[j + 1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
        }
      }
      const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
      for (int c = 0; c < C; ++c) {
        const int8_t* q = xq + c * K + b * 32;
        __m512i s0 = _mm512_set1_epi32(-kOffset * xs[c * nb + b]), s1 = _mm512_setzero_si512();
        for (int j = 0; j < 8; j += 2) {  // two chains
          s0 = _mm512_dpbusd_epi32(s0, w[j], x4(q + r16_x_offset<D>(j)));
          s1 = _mm512_dpbusd_epi32(s1, w[j + 1], x4(q + r16_x_offset<D>(j + 1)));
        }
        const __m512 d = _mm512_mul_ps(dw, _mm512_set1_ps(xd[c * nb + b]));
        acc[g][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), d, acc[g][c]);
      }
    }
  }
  for (int g = 0; g < S; ++g)
    for (int c = 0; c < C; ++c) _mm512_storeu_ps(out + g * ldy + c * ldo, acc[g][c]);
}

// qmatmul for R16 W: the groups of 16 rows, then the plain tail rows (N % 16) by qtile. Decode
// (T == 1) reads kStreams runs of groups side by side, each prefetched kQuantPrefetchBytes ahead
// (20-60% faster than one run, GPT-2 and TinyLlama Q8_0; 2 KiB ahead 3-20% faster than none and
// than 1 or 4 KiB, whole-model decode, 2 threads); with more tokens the groups are read
// in order (software prefetch measured no better there). Each group meets all T tokens before
// the next: blocks of 32 or 128 tokens (x kept in L2, W read again per block) measured slower
// at 512 tokens.
template <class A, DType D>
void qmatmul_r16(float* out, int64_t ldo, const QuantizedActs& x, int64_t T, const uint8_t* w, int64_t ldw, int64_t N) {
  constexpr int C = kQToks, S = kStreams;
  int64_t n = 0;
  if (T == 1) {  // decode: the groups cut into S contiguous runs, read side by side (as gemv)
    const int64_t q = N / kR16 / S * kR16;
    for (; n < q; n += kR16) qtile_r16<A, D, S, 1>(out + n, ldo, q, x, 0, w + n * ldw, q * ldw);
    n = S * q;
  }
  for (; n + kR16 <= N; n += kR16) {
    int64_t t = 0;
    for (; t + C <= T; t += C) qtile_r16<A, D, 1, C>(out + t * ldo + n, ldo, 0, x, t, w + n * ldw, 0);
    for (; t < T; ++t) qtile_r16<A, D, 1, 1>(out + t * ldo + n, ldo, 0, x, t, w + n * ldw, 0);
  }
  if (n < N) qmatmul<A, D>(out + n, ldo, x, T, w + n * ldw, ldw, N - n);
}
#endif

// ---- attention and SSM ------------------------------------------------------------------------

// Query heads of one KV group taken together in a pass: each key and value row is loaded once
// for all of them while their accumulators stay in registers (32 vector registers: 4 heads;
// 16: 2).
template <class A>
constexpr int kAttendHeads = sizeof(V<A>) == 64 ? 4 : 2;

// Rows of the KV cache are a few cache lines, a whole cache row apart: too short for the hardware
// prefetcher, so the kernels ask for the row they will read some keys ahead (n values of type T).
template <class A, class T>
void prefetch_row(const T* p, int64_t n) {
  for (int64_t i = 0; i < n; i += 64 / static_cast<int64_t>(sizeof(T))) __builtin_prefetch(p + i);
}

// Lane i of the result = the sum of the lanes of rows[i], for kLanes rows (xsimd::haddp, except
// that xsimd 8.1's AVX-512 haddp returns lanes 2-5 and 10-13 in the wrong order: fold each row
// to 8 lanes and use the AVX2 one twice).
template <class A>
[[gnu::always_inline]] inline V<A> lane_sums(const V<A>* rows) {
#if defined(__AVX512F__)
  if constexpr (kLanes<A> == 16) {
    xsimd::batch<float, xsimd::avx2> half[16];
    for (int r = 0; r < 16; ++r) {
      const __m512 x = rows[r];
      half[r] = _mm256_add_ps(_mm512_castps512_ps256(x), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
    }
    const __m256 lo = xsimd::haddp(half), hi = xsimd::haddp(half + 8);
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(lo)), _mm256_castps_pd(hi), 1));
  }
#endif
  return xsimd::haddp(rows);
}

// Accumulators for (key, head) pairs the score kernel keeps in registers: half the vector
// registers (32 with AVX-512, 16 with AVX2 / SSE2 / NEON).
template <class A>
constexpr int kScoreAccs = sizeof(V<A>) == 64 ? 16 : 8;

// Keys per step of the score kernel for H heads: enough independent FMA chains to hide the FMA
// latency, a power of two that divides kLanes.
template <class A, int H>
constexpr int64_t score_keys() {
  int64_t b = 1;
  while (2 * b * H <= kScoreAccs<A> && 2 * b <= kLanes<A>) b *= 2;
  return b;
}

// part[g][b] = a vector whose lanes sum to q_g . k_b, for H heads and B keys (ks[b]). Inlined
// into attend_scores, as lane_sums is (GCC called both): MHA decode attention over 544 keys
// with the cache in L2 went 40 -> 60 GB/s (F16) and 65 -> 85 GB/s (F32), 2 threads.
template <class A, DType D, int H, int64_t B>
[[gnu::always_inline]] inline void dot_lanes(V<A> (*part)[kLanes<A>], const float* q, const storage_t<D>* const* ks, int64_t d) {
  V<A> acc[B][H];
  for (auto& a : acc)
    for (V<A>& x : a) x = V<A>(0.0f);
  int64_t i = 0;
  for (; i + kLanes<A> <= d; i += kLanes<A>) {
    V<A> qv[H];
    for (int g = 0; g < H; ++g) qv[g] = V<A>::load_unaligned(q + g * d + i);
    for (int64_t b = 0; b < B; ++b) {
      const V<A> kv = load<A, D>(ks[b] + i);
      for (int g = 0; g < H; ++g) acc[b][g] = xsimd::fma(qv[g], kv, acc[b][g]);
    }
  }
  if (i < d)
    for (int64_t b = 0; b < B; ++b) {
      const V<A> kv = load_partial<A, D>(ks[b] + i, d - i);
      for (int g = 0; g < H; ++g) acc[b][g] = xsimd::fma(load_partial<A>(q + g * d + i, d - i), kv, acc[b][g]);
    }
  for (int64_t b = 0; b < B; ++b)
    for (int g = 0; g < H; ++g) part[g][b] = acc[b][g];
}

// sg[b] = scale * dots[b] (+ ALiBi) for the m (<= kLanes) keys first + j0 + b of head g.
template <class A>
void store_scores(float* sg, V<A> dots, int64_t m, const AttendGroup& r, int g, int64_t j0) {
  const V<A> sc = dots * V<A>(r.scale);
  if (m == kLanes<A>)
    sc.store_unaligned(sg);
  else
    store_partial<A>(sg, sc, m);
  if (r.slopes)
    for (int64_t b = 0; b < m; ++b) sg[b] += r.slopes[g] * static_cast<float>(r.first + j0 + b - r.last);
}

// s[g * n + j] = scale * q_g . k_(first + j) (+ ALiBi) for j < n and H heads from g0. Keys go
// kLanes at a time: one lane-sum vector per (head, key), reduced together by lane_sums. The keys
// past n in the last step repeat the last key; their scores are not stored.
template <class A, DType D, int H>
void attend_scores(float* s, int64_t n, const AttendGroup& r, int g0) {
  constexpr int64_t L = kLanes<A>, B = score_keys<A, H>();
  V<A> part[H][L];
  const float* q = r.q + g0 * r.d;
  const auto* k = static_cast<const storage_t<D>*>(r.k);
  for (int64_t j0 = 0; j0 < n; j0 += L) {
    const int64_t m = n - j0 < L ? n - j0 : L;
    for (int64_t jj = 0; jj < L; jj += B) {
      const storage_t<D>* ks[B];
      for (int64_t b = 0; b < B; ++b) {
        const int64_t j = r.first + j0 + (jj + b < m ? jj + b : m - 1);
        ks[b] = k + j * r.k_stride;
        prefetch_row<A>(ks[b] + L * r.k_stride, r.d);
      }
      dot_lanes<A, D, H, B>(reinterpret_cast<V<A>(*)[L]>(&part[0][jj]), q, ks, r.d);
    }
    for (int g = 0; g < H; ++g) store_scores<A>(s + g * n + j0, lane_sums<A>(part[g]), m, r, g0 + g, j0);
  }
}

// out_g[c] = sum_j p[g * n + j] * v_(first + j)[c] for H heads from g0, in column blocks of
// four vectors. S key streams (S = 2 for a single head) give the FMA chains enough independence.
template <class A, DType D, int H, int S>
void attend_values(const float* p, int64_t n, const AttendGroup& r, int g0) {
  constexpr int64_t L = kLanes<A>;
  constexpr int C = 4;
  const auto* values = static_cast<const storage_t<D>*>(r.v);
  int64_t i = 0;
  for (; i + C * L <= r.d; i += C * L) {
    V<A> acc[S][H][C];
    for (auto& sa : acc)
      for (auto& ha : sa)
        for (V<A>& a : ha) a = V<A>(0.0f);
    const storage_t<D>* v = values + r.first * r.v_stride + i;
    int64_t j = 0;
    for (; j + S <= n; j += S)
      for (int st = 0; st < S; ++st) {
        const storage_t<D>* vj = v + (j + st) * r.v_stride;
        prefetch_row<A>(vj + 8 * r.v_stride, C * L);
        V<A> x[C];
        for (int c = 0; c < C; ++c) x[c] = load<A, D>(vj + c * L);
        for (int g = 0; g < H; ++g) {
          const V<A> pj(p[g * n + j + st]);
          for (int c = 0; c < C; ++c) acc[st][g][c] = xsimd::fma(pj, x[c], acc[st][g][c]);
        }
      }
    for (; j < n; ++j)
      for (int g = 0; g < H; ++g)
        for (int c = 0; c < C; ++c)
          acc[0][g][c] = xsimd::fma(V<A>(p[g * n + j]), load<A, D>(v + j * r.v_stride + c * L), acc[0][g][c]);
    for (int g = 0; g < H; ++g)
      for (int c = 0; c < C; ++c) {
        for (int st = 1; st < S; ++st) acc[0][g][c] += acc[st][g][c];
        acc[0][g][c].store_unaligned(r.out + (g0 + g) * r.d + i + c * L);
      }
  }
  for (; i < r.d; i += L) {
    const int64_t m = r.d - i < L ? r.d - i : L;
    V<A> acc[H];
    for (V<A>& a : acc) a = V<A>(0.0f);
    for (int64_t j = 0; j < n; ++j) {
      const storage_t<D>* vj = values + (r.first + j) * r.v_stride + i;
      const V<A> x = m == L ? load<A, D>(vj) : load_partial<A, D>(vj, m);
      for (int g = 0; g < H; ++g) acc[g] = xsimd::fma(V<A>(p[g * n + j]), x, acc[g]);
    }
    for (int g = 0; g < H; ++g) {
      if (m == L) acc[g].store_unaligned(r.out + (g0 + g) * r.d + i);
      else store_partial<A>(r.out + (g0 + g) * r.d + i, acc[g], m);
    }
  }
}

#if defined(__AVX512F__)
// r[c] = lane c of each of r[0..15], in place: a 16 x 16 transpose in four shuffle stages.
inline void transpose16(__m512* r) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 4) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    t[i + 2] = _mm512_unpacklo_ps(r[i + 2], r[i + 3]);
    t[i + 3] = _mm512_unpackhi_ps(r[i + 2], r[i + 3]);
  }
  const auto pairs = [](__m512 a, __m512 b, bool hi) {
    const __m512d x = _mm512_castps_pd(a), y = _mm512_castps_pd(b);
    return _mm512_castpd_ps(hi ? _mm512_unpackhi_pd(x, y) : _mm512_unpacklo_pd(x, y));
  };
  for (int i = 0; i < 16; i += 4) {
    r[i] = pairs(t[i], t[i + 2], false);
    r[i + 1] = pairs(t[i], t[i + 2], true);
    r[i + 2] = pairs(t[i + 1], t[i + 3], false);
    r[i + 3] = pairs(t[i + 1], t[i + 3], true);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
  }
}

// acc[g] += q_g[c0 + c] * t[c] for c < count: one FMA per head and dimension, q broadcast.
// Inlined, so that a count of 16 unrolls whole and acc stays in registers.
template <int G>
[[gnu::always_inline]] inline void add_dims(__m512* acc, const __m512* t, const float* q, int64_t d,
                                            int64_t c0, int64_t count) {
#pragma GCC unroll 16
  for (int64_t c = 0; c < count; ++c)
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) acc[g] = _mm512_fmadd_ps(_mm512_set1_ps(q[g * d + c0 + c]), t[c], acc[g]);
}

// s[g * n + j] = scale * q_g . k_(first + j) (+ ALiBi) for all G heads of a GQA / MQA group,
// 16 keys at a time, with no lane sums: each 16 x 16 piece of the keys is transposed so that a
// vector holds one dimension of 16 keys, and each head adds its q value times that vector. The
// transpose is paid once for all G heads, so it pays from G = 4 on (scores_together). Keys past
// n in the last step repeat the last key; their scores are not stored.
template <class A, DType D, int G>
void attend_scores_transposed(float* s, int64_t n, const AttendGroup& r) {
  const auto* k = static_cast<const storage_t<D>*>(r.k);
  for (int64_t j0 = 0; j0 < n; j0 += 16) {
    const int64_t m = n - j0 < 16 ? n - j0 : 16;
    const storage_t<D>* rows[16];
    for (int64_t b = 0; b < 16; ++b) {
      rows[b] = k + (r.first + j0 + (b < m ? b : m - 1)) * r.k_stride;
      prefetch_row<A>(rows[b] + 16 * r.k_stride, r.d);
    }
    __m512 acc[G];
    for (__m512& a : acc) a = _mm512_setzero_ps();
    for (int64_t c0 = 0; c0 < r.d; c0 += 16) {
      const int64_t w = r.d - c0 < 16 ? r.d - c0 : 16;
      __m512 t[16];
      for (int b = 0; b < 16; ++b)
        t[b] = w == 16 ? load<A, D>(rows[b] + c0) : load_partial<A, D>(rows[b] + c0, w);
      transpose16(t);
      if (w == 16)
        add_dims<G>(acc, t, r.q, r.d, c0, 16);
      else
        add_dims<G>(acc, t, r.q, r.d, c0, w);
    }
    for (int g = 0; g < G; ++g) store_scores<A>(s + g * n + j0, V<A>(acc[g]), m, r, g, j0);
  }
}
#endif

// Every head's scores of a group at once, into r.scores, where the transposed road pays: 16-lane
// vectors and 4 to 8 heads on one KV head (the calls take at most 8). False leaves the scores to
// attend_heads. One decode attention call, one thread, 544 keys in L2 (a scratch microbenchmark,
// runs of each in turn): 32 query heads on 4 KV heads (groups of 8, TinyLlama) 57.6-67.2 -> 45.0-
// 45.8 us with an F32 cache, 52.6-53.1 -> 41.0-41.5 with F16; groups of 7 / 6 / 5 1.3-1.45x /
// 1.2-1.3x / 1.1-1.2x. Groups of 4 (Llama 3 8B) went 0.95x in that hour and 1.15-1.27x in a later
// one, when the lane-sum kernel ran 1.5x slower than before and this one 1.2x.
template <class A, DType D, int G = 8>
bool scores_together([[maybe_unused]] const AttendGroup& r) {
#if defined(__AVX512F__)
  if constexpr (kLanes<A> == 16 && G >= 4) {
    if (r.heads < G) return scores_together<A, D, G - 1>(r);
    if (r.heads > G) return false;
    attend_scores_transposed<A, D, G>(r.scores, r.last - r.first + 1, r);
    return true;
  }
#endif
  return false;
}

// Heads g0 .. g0 + H - 1 of the group (fewer when fewer are left): scores (unless `scored`:
// already at r.scores + g0 * n), softmax, values. Softmax is shift invariant, so ALiBi's slope * j
// is applied as slope * (j - last): the same probabilities with smaller numbers, which float
// represents more exactly.
template <class A, DType D, int H = kAttendHeads<A>>
void attend_heads(const AttendGroup& r, int g0, bool scored) {
  if constexpr (H > 1)
    if (r.heads - g0 < H) return attend_heads<A, D, H - 1>(r, g0, scored);
  const int64_t n = r.last - r.first + 1;
  float* s = scored ? r.scores + g0 * n : r.scores;
  if (!scored) attend_scores<A, D, H>(s, n, r, g0);
  float total[H];
  for (int g = 0; g < H; ++g) total[g] = exp_shifted<A>(s + g * n, s + g * n, n);
  attend_values<A, D, H, H == 1 ? 2 : 1>(s, n, r, g0);
  for (int g = 0; g < H; ++g) {
    float* out = r.out + (g0 + g) * r.d;
    scale<A>(out, out, 1.0f / total[g], r.d);
    if (!r.probs) continue;
    float* probs = r.probs + (g0 + g) * r.probs_stride;
    for (int64_t j = 0; j < r.probs_len; ++j)
      probs[j] = (j >= r.first && j <= r.last) ? s[g * n + j - r.first] / total[g] : 0.0f;
  }
}

template <class A, DType D>
void attend_group(const AttendGroup& r) {
  const bool scored = scores_together<A, D>(r);
  for (int g0 = 0; g0 < r.heads; g0 += kAttendHeads<A>) attend_heads<A, D>(r, g0, scored);
}

template <class A>
void attend(const AttendGroup& r) {
  r.kv_dtype == DType::F16 ? attend_group<A, DType::F16>(r) : attend_group<A, DType::F32>(r);
}

template <class A>
void ssm_step(const SsmStep& st) {
  constexpr int64_t L = kLanes<A>;
  const V<A> decay(st.decay);
  for (int64_t p = 0; p < st.P; ++p) {
    float* S = st.S + p * st.N;
    const float dx = st.dt * st.x[p];
    V<A> acc(0.0f);
    int64_t n = 0;
    for (; n + L <= st.N; n += L) {
      const V<A> s = xsimd::fma(decay, V<A>::load_unaligned(S + n), V<A>(dx) * V<A>::load_unaligned(st.B + n));
      s.store_unaligned(S + n);
      acc = xsimd::fma(s, V<A>::load_unaligned(st.C + n), acc);
    }
    float y = xsimd::hadd(acc);
    for (; n < st.N; ++n) {
      S[n] = st.decay * S[n] + dx * st.B[n];
      y += S[n] * st.C[n];
    }
    st.y[p] = y + st.D * st.x[p];
  }
}

}  // namespace purellm::cpu::simd

namespace purellm::cpu {

// The table of kernels for arch A; explicitly instantiated in kernels_<isa>.cpp.
template <class A>
const Kernels& kernel_table() {
  using namespace simd;
  static const Kernels table{
      .f16_to_f32 = convert_row<A, DType::F16>,
      .bf16_to_f32 = convert_row<A, DType::BF16>,
      .f32_to_f16 = f32_to_f16_row<A>,
      .add = add<A>,
      .mul = mul<A>,
      .scale = scale<A>,
      .add_scaled = add_scaled<A>,
      .mul_add = mul_add<A>,
      .gelu = gelu<A>,
      .gelu_tanh = gelu_tanh<A>,
      .relu = relu<A>,
      .silu = silu<A>,
      .silu_mul = silu_mul<A>,
      .sum = sum<A>,
      .layernorm = layernorm<A>,
      .rmsnorm = rmsnorm<A>,
      .softmax = softmax<A>,
      .argmax = argmax<A>,
      .rope = rope<A>,
      .gemv_f32 = gemv<A, DType::F32>,
      .gemv_f16 = gemv<A, DType::F16>,
      .gemv_bf16 = gemv<A, DType::BF16>,
      .mr = kTileRows,
      .nr = static_cast<int>(2 * kLanes<A>),
      .pack_w_f32 = pack_w<A, DType::F32>,
      .pack_w_f16 = pack_w<A, DType::F16>,
      .pack_w_bf16 = pack_w<A, DType::BF16>,
      .pack_w_q8_0 = pack_w_quant<A, DType::Q8_0>,
      .pack_w_q4_0 = pack_w_quant<A, DType::Q4_0>,
      .pack_x = pack_x<A>,
      .gemm_tile = gemm_tile<A>,
      .qmatmul_q8_0 = qmatmul<A, DType::Q8_0>,
      .qmatmul_q4_0 = qmatmul<A, DType::Q4_0>,
      .qmatmul_r16 = nullptr,  // AVX-512 VNNI only (kernels_avx512vnni.cpp)
      .fma_loop = fma_loop<A>,
      .online_softmax = online_softmax<A>,
      .attend = attend<A>,
      .ssm_step = ssm_step<A>,
  };
  return table;
}

}  // namespace purellm::cpu
