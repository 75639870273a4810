// The SIMD kernel table: one set of single-threaded kernels per instruction set.
//
// The kernels are written once, in kernels_impl.hpp, as templates on the xsimd architecture
// (batch<float, Arch>), and explicitly instantiated in one translation unit per instruction
// set (kernels_sse2.cpp, kernels_avx2.cpp, kernels_avx512.cpp, kernels_neon.cpp), each
// compiled with only that set's flags. Everything else in the backend sees only this header:
// a struct of plain function pointers over raw row pointers, filled once per instruction set.
// Shape checks, threading and blocking live in the callers (ops.cpp, matmul.cpp), which are
// compiled for the baseline CPU.
//
// Conventions: n, K, N, kc count floats; ld* are row strides in elements; outputs come first;
// "out may equal an input" wherever an op is elementwise.
#pragma once

#include <cstdint>

#include "tensor/cpu/cpu_backend.hpp"
#include "tensor/quant.hpp"

namespace purellm::cpu {

// One query row of attention over the cache for `heads` query heads that share one key/value
// head (GQA/MQA; 1 for MHA), so each key and value is read once for all of them. Query head g
// of the group reads q + g * d and writes out + g * d. See Backend::attention.
struct AttendGroup {
  float* out;           // [heads * d]
  const float* q;       // [heads * d]
  int heads;
  const void* k;        // key j at k + j * k_stride, [d] each, of kv_dtype (F32 or F16)
  const void* v;        // value j at v + j * v_stride
  DType kv_dtype;
  int64_t k_stride, v_stride;  // in values
  int64_t d;
  int64_t first, last;  // visible keys: first <= j <= last
  float scale;
  const float* slopes;  // ALiBi slopes [heads] (null: none); adds slope * j to the score of key j
  float* scores;        // scratch [heads * (last - first + 1)]
  float* probs;         // optional output: head g's softmax weights at probs + g * probs_stride,
  int64_t probs_len;    //   [probs_len] each, 0 outside [first, last]
  int64_t probs_stride;
};

// One Mamba2 head for one token: S = decay * S + dt * outer(x, B);  y = S . C + D * x.
struct SsmStep {
  float* S;             // [P, N] state of this head, updated
  float* y;             // [P]
  const float* x;       // [P]
  const float* B;       // [N]
  const float* C;       // [N]
  float dt, decay, D;
  int64_t P, N;
};

// Independent FMA chains of Kernels::fma_loop. Zen 5: 2 FMA pipes x latency 4 = 8 in flight;
// 12 covers more.
constexpr int kFmaChains = 12;

struct Kernels {
  // Row conversions of n values.
  void (*f16_to_f32)(float* dst, const uint16_t* src, int64_t n);
  void (*bf16_to_f32)(float* dst, const uint16_t* src, int64_t n);
  void (*f32_to_f16)(uint16_t* dst, const float* src, int64_t n);  // round to nearest even

  // Elementwise over n values.
  void (*add)(float* out, const float* a, const float* b, int64_t n);
  void (*mul)(float* out, const float* a, const float* b, int64_t n);
  void (*scale)(float* out, const float* x, float s, int64_t n);
  void (*add_scaled)(float* out, const float* x, float s, int64_t n);      // out += s * x
  void (*mul_add)(float* out, const float* a, const float* b, int64_t n);  // out += a * b
  void (*gelu)(float* out, const float* x, int64_t n);
  void (*gelu_tanh)(float* out, const float* x, int64_t n);
  void (*relu)(float* out, const float* x, int64_t n);
  void (*silu)(float* out, const float* x, int64_t n);
  void (*silu_mul)(float* out, const float* gate, const float* up, int64_t n);

  // The sum of n values, read as four streams (the bandwidth probe).
  float (*sum)(const float* x, int64_t n);
  // One row of n values. b may be null (no layernorm bias).
  void (*layernorm)(float* out, const float* x, const float* w, const float* b, float eps, int64_t n);
  void (*rmsnorm)(float* out, const float* x, const float* w, float eps, int64_t n);
  void (*softmax)(float* out, const float* x, int64_t n);
  int64_t (*argmax)(const float* x, int64_t n);
  // Rotates the pairs (v[i], v[i + half]) by (cos[i], sin[i]) for i < half.
  void (*rope)(float* v, const float* cos, const float* sin, int64_t half);

  // GEMV: y[n] = x . W[n] (+ bias[n]) for n < N.  x: [K], W: [N, K] rows ldw apart, bias: [N] or null.
  void (*gemv_f32)(float* y, const float* x, const float* w, int64_t ldw, int64_t K, int64_t N,
                   const float* bias);
  void (*gemv_f16)(float* y, const float* x, const uint16_t* w, int64_t ldw, int64_t K, int64_t N,
                   const float* bias);
  void (*gemv_bf16)(float* y, const float* x, const uint16_t* w, int64_t ldw, int64_t K, int64_t N,
                    const float* bias);

  // GEMM pieces for the blocked driver in matmul.cpp. A tile is mr rows of x by nr rows of W.
  int mr, nr;
  // dst: [kc, nr] <- W[0:rows, 0:kc] transposed, as F32; rows < nr are zero-padded.
  void (*pack_w_f32)(float* dst, const float* w, int64_t ldw, int64_t rows, int64_t kc);
  void (*pack_w_f16)(float* dst, const uint16_t* w, int64_t ldw, int64_t rows, int64_t kc);
  void (*pack_w_bf16)(float* dst, const uint16_t* w, int64_t ldw, int64_t rows, int64_t kc);
  // The same for Q8_0 / Q4_0 rows (ldw bytes apart, kc a multiple of 32), dequantized.
  void (*pack_w_q8_0)(float* dst, const uint8_t* w, int64_t ldw, int64_t rows, int64_t kc);
  void (*pack_w_q4_0)(float* dst, const uint8_t* w, int64_t ldw, int64_t rows, int64_t kc);
  // dst: [kc, mr] <- x[0:rows, 0:kc] transposed; rows < mr are zero-padded.
  void (*pack_x)(float* dst, const float* x, int64_t ldx, int64_t rows, int64_t kc);
  // c[mr, nr] (rows ldc apart) = (accumulate ? c : 0) + a^T b.  a: [kc, mr], b: [kc, nr] packed.
  void (*gemm_tile)(float* c, int64_t ldc, const float* a, const float* b, int64_t kc, bool accumulate);

  // Quantized weights (quant.hpp) times activations already quantized to Q8 blocks:
  //   out[t * ldo + n] = sum_b d_w[n, b] * d_x[t, b] * (integer dot of block b)
  // for t < T, n < N. x: T rows of K values (x.K), W: N rows of K/32 Q8_0 / Q4_0 blocks, rows
  // ldw bytes apart. No bias (the caller adds it). Tiles of rows of W times tokens of x.
  void (*qmatmul_q8_0)(float* out, int64_t ldo, const QuantizedActs& x, int64_t T, const uint8_t* w,
                       int64_t ldw, int64_t N);
  void (*qmatmul_q4_0)(float* out, int64_t ldo, const QuantizedActs& x, int64_t T, const uint8_t* w,
                       int64_t ldw, int64_t N);
  // The same for Q8_0_R16 / Q4_0_R16 W (quant.hpp): N rows from a multiple of 16 (the last
  // N % 16 plain), [0] for Q8_0_R16, [1] for Q4_0_R16. Null where the ISA has no kernels for the
  // layouts (then the CPU backend keeps Q8_0 / Q4_0 as they are).
  using QMatmul = void (*)(float* out, int64_t ldo, const QuantizedActs& x, int64_t T, const uint8_t* w,
                           int64_t ldw, int64_t N);
  const QMatmul* qmatmul_r16;

  // The FMA units' limit, for benchmarks: `iters` steps of kFmaChains independent vector FMA
  // chains (acc = acc * m + a, enough chains to hide the FMA latency); *sink = the sum of all
  // lanes of all chains. Returns the flops done (2 per lane per FMA).
  double (*fma_loop)(int64_t iters, float* sink);

  // One block of one row of scores in FlashAttention's online softmax. s[0:n] are scores, -inf
  // for masked keys, at least one finite; m and l are the row's running maximum (-inf before its
  // first block) and running sum of exponentials. Sets m' = max(m, max s), s[j] = exp(s[j] - m'),
  // l = l * exp(m - m') + sum s, m = m'; returns exp(m - m'), the factor by which the row's
  // output accumulated so far must be scaled.
  float (*online_softmax)(float* s, int64_t n, float* m, float* l);
  // Attention for one query row (decode; prefill without tiles). See attention.cpp.
  void (*attend)(const AttendGroup& group);
  void (*ssm_step)(const SsmStep& step);
};

// AVX-512 with VNNI (vpdpbusd): the AVX-512 table with integer dot products for the quantized
// matmuls, from its own TU (kernels_avx512vnni.cpp, compiled with -mavx512vnni).
const Kernels& kernel_table_avx512vnni();

// The table of one instruction set; null for Scalar or a set not compiled into this binary.
const Kernels* kernels_for(Isa isa);

}  // namespace purellm::cpu
