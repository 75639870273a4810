// Scalar reference kernels: the ground truth for every Backend op (llm.c's *_naive style).
//
// Plain loops, one op per function, reductions accumulated in double. They define what
// each op means; the SIMD kernels and any GPU backend are tested against them. They also
// serve as the "scalar" ISA of the CPU backend (PURELLM_ISA=scalar).
#pragma once

#include <span>

#include "tensor/backend.hpp"

namespace purellm::ref {

// Row r of a weight matrix (any float dtype in the traits table) converted to F32.
void weight_row_f32(const Tensor& w, int64_t r, float* dst);

void embed(const Tensor& out, const Tensor& table, std::span<const int32_t> ids);
void matmul(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias);
void add(const Tensor& out, const Tensor& a, const Tensor& b);
void mul(const Tensor& out, const Tensor& a, const Tensor& b);
void scale(const Tensor& out, const Tensor& x, float s);
void add_scaled(const Tensor& out, const Tensor& x, float s);
void copy(const Tensor& out, const Tensor& x);
void layernorm(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b, float eps);
void rmsnorm(const Tensor& out, const Tensor& x, const Tensor& w, float eps);
void softmax(const Tensor& out, const Tensor& x);
void gelu(const Tensor& out, const Tensor& x);
void gelu_tanh(const Tensor& out, const Tensor& x);
void relu(const Tensor& out, const Tensor& x);
void silu(const Tensor& out, const Tensor& x);
void silu_mul(const Tensor& out, const Tensor& gate, const Tensor& up);
void rope(const Tensor& x, int n_heads, int head_dim, int rot_dims, int64_t pos0,
          const Tensor& cos, const Tensor& sin);
void attention(const Tensor& out, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
               const AttentionArgs& args);
int64_t argmax(const Tensor& x);
void conv1d_causal(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias,
                   const Tensor& state);
void ssm_scan(const Tensor& y, const Tensor& x, const Tensor& dt, const Tensor& B,
              const Tensor& C, const Tensor& A_log, const Tensor& D, const Tensor& dt_bias,
              const Tensor& state, const SsmArgs& args);

// Shape checks shared by every implementation of the ops: throw std::invalid_argument
// naming the op and the offending operand. Each op above calls its check first.
void check_same_shape(const char* op, const Tensor& out, const Tensor& x);
// copy: x F32, out F32 or F16 (a KV cache's rows: converted, rounding to nearest even).
void check_copy(const Tensor& out, const Tensor& x);
void check_f32_rows(const char* op, const char* what, const Tensor& t);
void check_embed(const Tensor& out, const Tensor& table, std::span<const int32_t> ids);
void check_matmul(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias);
void check_norm(const char* op, const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b);
void check_rope(const Tensor& x, int n_heads, int head_dim, int rot_dims, int64_t pos0,
                const Tensor& cos, const Tensor& sin);
void check_attention(const Tensor& out, const Tensor& q, const Tensor& k_cache,
                     const Tensor& v_cache, const AttentionArgs& args);
void check_argmax(const Tensor& x);
void check_conv1d(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias,
                  const Tensor& state);
void check_ssm(const Tensor& y, const Tensor& x, const Tensor& dt, const Tensor& B,
               const Tensor& C, const Tensor& A_log, const Tensor& D, const Tensor& dt_bias,
               const Tensor& state, const SsmArgs& args);

}  // namespace purellm::ref
