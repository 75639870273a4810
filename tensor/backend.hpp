// The Backend interface: the only way model code touches memory and arithmetic.
//
// Three groups: memory (alloc, upload/download, synchronize), capability (supports), and
// ops. Ops are eager and coarse (one GPU kernel each is worth launching). The CPU backend
// implements them with a scalar reference and SIMD kernels; a CUDA plug-in implements the
// same list. Model files never see which one they run on.
//
// Operand conventions (see tensor.hpp): activations are F32 matrices [rows, cols] with
// contiguous rows and any row stride >= cols. Outputs come first, like llm.c. An output may
// alias an input only where the op says "in place allowed". Weights may be F32, F16, BF16
// (and the quantized types of the dtype table where supports() says so).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "tensor/tensor.hpp"

namespace purellm {

enum class Op {
  Embed, Matmul, Add, Mul, Scale, AddScaled, Copy, LayerNorm, RmsNorm, Softmax,
  Gelu, GeluTanh, Relu, Silu, SiluMul, Rope, Attention, Argmax,
  Conv1dCausal, SsmScan,
};

// Attention over a KV cache.
//   q:        [T, n_heads * head_dim]       queries for positions pos0 .. pos0+T-1
//   k_cache:  [S, n_kv_heads * head_dim]    keys for positions 0 .. pos0+T-1 already written
//   v_cache:  [S, n_kv_heads * head_dim]    values, same layout and dtype: F32, or F16 where
//                                           supports(Op::Attention, DType::F16) (copy converts)
//   out:      [T, n_heads * head_dim]
// Query head h reads KV head h / (n_heads / n_kv_heads) (MHA, GQA and MQA alike).
// Query t (position p = pos0 + t) sees key j iff j <= p and, when window > 0, j > p - window.
// score = scale * q.k + (alibi ? alibi_slopes[h] * j : 0); softmax over the visible keys.
struct AttentionArgs {
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int64_t pos0 = 0;
  float scale = 1.0f;
  int64_t window = 0;       // 0: no sliding window
  Tensor alibi_slopes;      // F32 [n_heads] on the backend's device, or empty for none
  Tensor probs;             // optional output F32 [n_heads, T, pos0+T] (trace); empty: not kept
};

// Mamba2 selective scan over T tokens for one layer, updating the caller's state.
//   y:      [T, n_heads * head_dim]   output, including the D skip term
//   x:      [T, n_heads * head_dim]
//   dt:     [T, n_heads]              raw dt from in_proj (dt_bias and softplus applied inside)
//   B, C:   [T, n_groups * d_state]
//   state:  F32 [n_heads, head_dim, d_state], read and written
// Per head h (group g = h / (n_heads / n_groups)), per token:
//   d = clamp(softplus(dt + dt_bias[h]), dt_min, dt_max);  a = exp(-exp(A_log[h]) * d)
//   S = a * S + d * outer(x_h, B_g);  y_h = S . C_g + D[h] * x_h
struct SsmArgs {
  int n_heads = 0;
  int head_dim = 0;
  int d_state = 0;
  int n_groups = 1;
  int chunk_size = 256;     // chunk length of the SSD form used for long prompts
  float dt_min = 0.0f;
  float dt_max = 3.4e38f;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;  // "cpu (avx2)", "cuda (NVIDIA H100)"
  virtual Device device() const = 0;

  // ---- memory -------------------------------------------------------------------------
  // Device memory owned by the returned handle (freed when it goes out of scope).
  virtual std::shared_ptr<void> alloc(size_t bytes) = 0;
  // A zero-filled contiguous F32/any tensor on this backend, with the memory that backs it.
  Tensor alloc_tensor(DType dtype, std::initializer_list<int64_t> shape,
                      std::shared_ptr<void>& keep);
  // Copy a contiguous host tensor into dst (same shape) / dst on host from a device tensor.
  virtual void upload(const Tensor& dst, const void* host) = 0;
  virtual void download(void* host, const Tensor& src) = 0;
  // A weight usable by this backend's ops: the CPU returns `host` itself (or, for a layout of
  // its own, `host` rewritten in place when `rewritable`, else a copy); a GPU copies it once into
  // memory kept alive by `keep`. `rewritable`: host's bytes are the caller's own copy, which it
  // frees unless the returned tensor points into it.
  virtual Tensor adopt_weight(const Tensor& host, bool rewritable, std::shared_ptr<void>& keep) = 0;
  virtual void synchronize() {}

  // ---- capability ---------------------------------------------------------------------
  // Whether op takes weights of this dtype (Matmul, Embed), or for Attention / Copy a KV cache of it.
  virtual bool supports(Op op, DType weight_dtype) const = 0;

  // ---- ops ----------------------------------------------------------------------------
  // out[t, :] = table[ids[t], :] as F32.          table: [V, D] F32/F16/BF16, out: [T, D]
  virtual void embed(const Tensor& out, const Tensor& table, std::span<const int32_t> ids) = 0;
  // out = x W^T (+ bias).  x: [T, K] F32, W: [N, K] any weight dtype, bias: [N] F32 or empty,
  // out: [T, N]. T == 1 is the decode GEMV; T > 1 the prefill GEMM.
  virtual void matmul(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias) = 0;
  // Elementwise on [rows, cols] (in place allowed): out = a + b, out = a * b, out = s * x,
  // out += s * x, out = x.
  virtual void add(const Tensor& out, const Tensor& a, const Tensor& b) = 0;
  virtual void mul(const Tensor& out, const Tensor& a, const Tensor& b) = 0;
  virtual void scale(const Tensor& out, const Tensor& x, float s) = 0;
  virtual void add_scaled(const Tensor& out, const Tensor& x, float s) = 0;
  virtual void copy(const Tensor& out, const Tensor& x) = 0;
  // Row-wise norms over the last dim (in place allowed).
  //   layernorm: (x - mean) / sqrt(var + eps) * w + b     w, b: [cols] F32 (b may be empty)
  //   rmsnorm:   x / sqrt(mean(x^2) + eps) * w            w: [cols] F32
  virtual void layernorm(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b,
                         float eps) = 0;
  virtual void rmsnorm(const Tensor& out, const Tensor& x, const Tensor& w, float eps) = 0;
  // Row-wise softmax (in place allowed).
  virtual void softmax(const Tensor& out, const Tensor& x) = 0;
  // Activations (in place allowed). gelu: exact erf form; gelu_tanh: the tanh approximation
  // ("gelu_new"); silu_mul: out = silu(gate) * up.
  virtual void gelu(const Tensor& out, const Tensor& x) = 0;
  virtual void gelu_tanh(const Tensor& out, const Tensor& x) = 0;
  virtual void relu(const Tensor& out, const Tensor& x) = 0;
  virtual void silu(const Tensor& out, const Tensor& x) = 0;
  virtual void silu_mul(const Tensor& out, const Tensor& gate, const Tensor& up) = 0;
  // Rotary embedding in place, rotate_half layout, on x: [T, n_heads * head_dim] at
  // positions pos0 .. pos0+T-1. Only the first rot_dims of each head rotate (partial rotary):
  // pairs (i, i + rot_dims/2). cos, sin: F32 [max_positions, rot_dims/2] precomputed tables
  // (so llama3 / linear scaling is only a different table).
  virtual void rope(const Tensor& x, int n_heads, int head_dim, int rot_dims, int64_t pos0,
                    const Tensor& cos, const Tensor& sin) = 0;
  virtual void attention(const Tensor& out, const Tensor& q, const Tensor& k_cache,
                         const Tensor& v_cache, const AttentionArgs& args) = 0;
  // Index of the largest element of row 0 (first one on ties).
  virtual int64_t argmax(const Tensor& x) = 0;

  // ---- state-space ops (Mamba2) -------------------------------------------------------
  // Depthwise causal convolution over time with kernel K, continuing from `state`.
  //   x: [T, C], w: [C, K] F32, bias: [C] or empty, out: [T, C] (no activation),
  //   state: F32 [C, K], the last K inputs seen before x (zeros for a fresh sequence);
  //   on return it holds the last K inputs including x.
  //   out[t, c] = bias[c] + sum_k w[c, k] * in[t - (K-1) + k, c], in = state history ++ x.
  virtual void conv1d_causal(const Tensor& out, const Tensor& x, const Tensor& w,
                             const Tensor& bias, const Tensor& state) = 0;
  // See SsmArgs. A_log, D, dt_bias: F32 [n_heads]. T == 1 is the recurrent decode step.
  virtual void ssm_scan(const Tensor& y, const Tensor& x, const Tensor& dt, const Tensor& B,
                        const Tensor& C, const Tensor& A_log, const Tensor& D,
                        const Tensor& dt_bias, const Tensor& state, const SsmArgs& args) = 0;
};

// The CPU backend (reference + SIMD kernels chosen at start-up), created on first use.
Backend& cpu_backend();

}  // namespace purellm
