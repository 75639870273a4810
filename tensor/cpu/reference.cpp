#include "tensor/cpu/reference.hpp"

#include "tensor/quant.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace purellm::ref {

namespace {

[[noreturn]] void fail(const char* op, const std::string& what) {
  throw std::invalid_argument(std::string(op) + ": " + what);
}

float silu1(float v) { return v / (1.0f + std::exp(-v)); }

float softplus1(float v) { return v > 20.0f ? v : std::log1p(std::exp(v)); }

// Applies f(value) -> value to every element of x, writing out.
template <class F>
void unary(const char* op, const Tensor& out, const Tensor& x, F f) {
  check_same_shape(op, out, x);
  for (int64_t r = 0; r < x.rows(); ++r) {
    const float* xr = x.row<float>(r);
    float* o = out.row<float>(r);
    for (int64_t c = 0; c < x.cols(); ++c) o[c] = f(xr[c]);
  }
}

template <class F>
void binary(const char* op, const Tensor& out, const Tensor& a, const Tensor& b, F f) {
  check_same_shape(op, out, a);
  check_same_shape(op, out, b);
  for (int64_t r = 0; r < a.rows(); ++r) {
    const float* ar = a.row<float>(r);
    const float* br = b.row<float>(r);
    float* o = out.row<float>(r);
    for (int64_t c = 0; c < a.cols(); ++c) o[c] = f(ar[c], br[c]);
  }
}

void check_contiguous_rows(const char* op, const char* what, const Tensor& t) {
  if (t.ndim > 1 && t.stride[static_cast<size_t>(t.ndim - 1)] != 1)
    fail(op, std::string(what) + " rows must be contiguous");
}

// Rows of a KV cache: F32 or F16 (the cache's dtype), contiguous within a row.
void check_cache_rows(const char* op, const char* what, const Tensor& t) {
  if (t.dtype != DType::F32 && t.dtype != DType::F16)
    fail(op, std::string(what) + " must be F32 or F16, got " + t.describe());
  check_contiguous_rows(op, what, t);
}

}  // namespace

void check_f32_rows(const char* op, const char* what, const Tensor& t) {
  if (t.dtype != DType::F32) fail(op, std::string(what) + " must be F32, got " + t.describe());
  check_contiguous_rows(op, what, t);
}

void check_copy(const Tensor& out, const Tensor& x) {
  check_f32_rows("copy", "input", x);
  check_cache_rows("copy", "output", out);
  if (out.rows() != x.rows() || out.cols() != x.cols())
    fail("copy", "output " + out.describe() + " does not match input " + x.describe());
}

void check_same_shape(const char* op, const Tensor& out, const Tensor& x) {
  check_f32_rows(op, "input", x);
  check_f32_rows(op, "output", out);
  if (out.rows() != x.rows() || out.cols() != x.cols())
    fail(op, "output " + out.describe() + " does not match input " + x.describe());
}

namespace {

// A parameter vector (norm weight, bias, per-head constant): F32 with exactly n elements.
void check_vector(const char* op, const char* what, const Tensor& v, int64_t n) {
  if (v.dtype != DType::F32 || v.numel() != n || !v.is_contiguous())
    fail(op, std::string(what) + " must be contiguous F32 [" + std::to_string(n) + "], got " +
                 v.describe());
}

bool is_float_weight(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

// A weight (matmul) or table (embed) operand: a float type with contiguous rows, or a block
// type whose rows hold whole blocks (and start on block boundaries).
bool is_weight_operand(const Tensor& w) {
  if (w.ndim < 1 || w.stride[static_cast<size_t>(w.ndim - 1)] != 1) return false;
  if (is_float_weight(w.dtype)) return true;
  if (is_interleaved(w.dtype) && w.row_stride() != w.cols()) return false;  // interleaved rows: whole
  return is_quantized(w.dtype) && w.cols() % kQuantBlock == 0 && w.row_stride() % kQuantBlock == 0;
}

}  // namespace

void check_embed(const Tensor& out, const Tensor& table, std::span<const int32_t> ids) {
  check_f32_rows("embed", "output", out);
  if (!is_weight_operand(table))
    fail("embed", "unsupported table " + table.describe());
  if (out.rows() != static_cast<int64_t>(ids.size()) || out.cols() != table.cols())
    fail("embed", "output " + out.describe() + " vs table " + table.describe());
  for (int32_t id : ids)
    if (id < 0 || id >= table.rows())
      fail("embed", "token id " + std::to_string(id) + " outside the vocabulary of " +
                        std::to_string(table.rows()));
}

void check_matmul(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_f32_rows("matmul", "x", x);
  check_f32_rows("matmul", "out", out);
  const int64_t T = x.rows(), K = x.cols(), N = w.rows();
  if (!is_weight_operand(w))
    fail("matmul", "unsupported weight " + w.describe() +
                       (is_quantized(w.dtype) ? " (quantized rows need a multiple of 32 values)" : ""));
  if (w.cols() != K) fail("matmul", "x " + x.describe() + " vs weight " + w.describe());
  if (out.rows() != T || out.cols() != N)
    fail("matmul", "output " + out.describe() + " should be [" + std::to_string(T) + ", " +
                       std::to_string(N) + "]");
  if (!bias.empty()) check_vector("matmul", "bias", bias, N);
}

void check_norm(const char* op, const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b) {
  check_same_shape(op, out, x);
  check_vector(op, "weight", w, x.cols());
  if (!b.empty()) check_vector(op, "bias", b, x.cols());
}

void check_rope(const Tensor& x, int n_heads, int head_dim, int rot_dims, int64_t pos0,
                const Tensor& cos, const Tensor& sin) {
  check_f32_rows("rope", "x", x);
  const int half = rot_dims / 2;
  if (x.cols() != static_cast<int64_t>(n_heads) * head_dim || rot_dims % 2 || rot_dims > head_dim ||
      rot_dims < 0)
    fail("rope", "x " + x.describe() + " vs heads " + std::to_string(n_heads) + " x " +
                     std::to_string(head_dim) + ", rot_dims " + std::to_string(rot_dims));
  check_f32_rows("rope", "cos", cos);
  check_f32_rows("rope", "sin", sin);
  if (cos.cols() < half || sin.cols() < half || pos0 < 0 || pos0 + x.rows() > cos.rows() ||
      pos0 + x.rows() > sin.rows())
    fail("rope", "position " + std::to_string(pos0 + x.rows() - 1) + " outside the table " +
                     cos.describe() + " / " + sin.describe());
}

void check_attention(const Tensor& out, const Tensor& q, const Tensor& k_cache,
                     const Tensor& v_cache, const AttentionArgs& a) {
  check_f32_rows("attention", "q", q);
  check_f32_rows("attention", "out", out);
  check_cache_rows("attention", "k_cache", k_cache);
  check_cache_rows("attention", "v_cache", v_cache);
  if (v_cache.dtype != k_cache.dtype)
    fail("attention", "k_cache " + k_cache.describe() + " and v_cache " + v_cache.describe() + " differ in dtype");
  const int64_t T = q.rows(), d = a.head_dim;
  if (a.n_kv_heads <= 0 || a.n_heads <= 0 || a.n_heads % a.n_kv_heads || d <= 0)
    fail("attention", "n_heads " + std::to_string(a.n_heads) + " not a multiple of n_kv_heads " +
                          std::to_string(a.n_kv_heads));
  if (q.cols() != a.n_heads * d || out.cols() != q.cols() || out.rows() != T)
    fail("attention", "q " + q.describe() + " / out " + out.describe() + " vs heads");
  if (k_cache.cols() != a.n_kv_heads * d || v_cache.cols() != k_cache.cols() || a.pos0 < 0 ||
      a.pos0 + T > k_cache.rows() || a.pos0 + T > v_cache.rows())
    fail("attention", "cache " + k_cache.describe() + " too small for position " +
                          std::to_string(a.pos0 + T - 1));
  if (!a.alibi_slopes.empty()) check_vector("attention", "alibi_slopes", a.alibi_slopes, a.n_heads);
  if (!a.probs.empty() &&
      (a.probs.dtype != DType::F32 || a.probs.ndim != 3 || !a.probs.is_contiguous() ||
       a.probs.dim(0) != a.n_heads || a.probs.dim(1) != T || a.probs.dim(2) < a.pos0 + T))
    fail("attention", "probs " + a.probs.describe() + " should be F32 [" + std::to_string(a.n_heads) +
                          ", " + std::to_string(T) + ", >= " + std::to_string(a.pos0 + T) + "]");
}

void check_argmax(const Tensor& x) {
  check_f32_rows("argmax", "x", x);
  if (x.numel() == 0) fail("argmax", "empty input " + x.describe());
}

void check_conv1d(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias,
                  const Tensor& state) {
  check_same_shape("conv1d_causal", out, x);
  const int64_t C = x.cols(), K = w.cols();
  check_f32_rows("conv1d_causal", "weight", w);
  check_f32_rows("conv1d_causal", "state", state);
  if (K < 1 || w.rows() != C || state.rows() != C || state.cols() != K)
    fail("conv1d_causal", "weight " + w.describe() + " / state " + state.describe() + " vs " +
                              x.describe());
  if (!bias.empty()) check_vector("conv1d_causal", "bias", bias, C);
}

void check_ssm(const Tensor& y, const Tensor& x, const Tensor& dt, const Tensor& B,
               const Tensor& C, const Tensor& A_log, const Tensor& D, const Tensor& dt_bias,
               const Tensor& state, const SsmArgs& a) {
  const int64_t T = x.rows(), P = a.head_dim, N = a.d_state;
  check_same_shape("ssm_scan", y, x);
  check_f32_rows("ssm_scan", "dt", dt);
  check_f32_rows("ssm_scan", "B", B);
  check_f32_rows("ssm_scan", "C", C);
  if (a.n_groups <= 0 || a.n_heads <= 0 || a.n_heads % a.n_groups || x.cols() != a.n_heads * P ||
      dt.cols() != a.n_heads || B.cols() != a.n_groups * N || C.cols() != a.n_groups * N ||
      dt.rows() != T || B.rows() != T || C.rows() != T || state.dtype != DType::F32 ||
      !state.is_contiguous() || state.numel() != static_cast<int64_t>(a.n_heads) * P * N)
    fail("ssm_scan", "inconsistent shapes: x " + x.describe() + ", dt " + dt.describe() + ", B " +
                         B.describe() + ", state " + state.describe());
  check_vector("ssm_scan", "A_log", A_log, a.n_heads);
  check_vector("ssm_scan", "D", D, a.n_heads);
  check_vector("ssm_scan", "dt_bias", dt_bias, a.n_heads);
}

void weight_row_f32(const Tensor& w, int64_t r, float* dst) {
  const int64_t n = w.cols();
  switch (w.dtype) {
    case DType::F32: {
      const float* s = w.row<float>(r);
      std::copy(s, s + n, dst);
      return;
    }
    case DType::F16: {
      const uint16_t* s = w.row<uint16_t>(r);
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    case DType::BF16: {
      const uint16_t* s = w.row<uint16_t>(r);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    case DType::Q8_0: return dequantize_row_q8_0(w.row(r), dst, n);
    case DType::Q4_0: return dequantize_row_q4_0(w.row(r), dst, n);
    case DType::Q8_0_R16:
    case DType::Q4_0_R16: return dequantize_row_r16(w.dtype, w.data, w.rows(), n, r, dst);
    default:
      fail("weight_row_f32", "unsupported weight dtype " + w.describe());
  }
}

void embed(const Tensor& out, const Tensor& table, std::span<const int32_t> ids) {
  check_embed(out, table, ids);
  for (size_t t = 0; t < ids.size(); ++t) {
    weight_row_f32(table, ids[t], out.row<float>(static_cast<int64_t>(t)));
  }
}

namespace {

// The integer dot product of one quantized weight row with one quantized activation row:
//   sum over blocks b of d_w[b] * d_x[b] * sum_i qw[b, i] * qx[b, i]   (Q4_0: qw - 8)
// Integer sums are exact; the blocks are summed in double.
double quantized_dot(DType dtype, const void* wrow, const QuantizedActs& a, int64_t t) {
  const int64_t nb = a.K / kQuantBlock;
  const int8_t* qx = a.q_row(t);
  const float* dx = a.d_row(t);
  double acc = 0.0;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t isum = 0;
    float dw;
    if (dtype == DType::Q8_0) {
      const BlockQ8_0& blk = static_cast<const BlockQ8_0*>(wrow)[b];
      dw = f16_to_f32(blk.d);
      for (int i = 0; i < kQuantBlock; ++i) isum += blk.q[i] * qx[b * kQuantBlock + i];
    } else {
      const BlockQ4_0& blk = static_cast<const BlockQ4_0*>(wrow)[b];
      dw = f16_to_f32(blk.d);
      for (int j = 0; j < kQuantBlock / 2; ++j)
        isum += ((blk.q[j] & 0x0f) - 8) * qx[b * kQuantBlock + j] + ((blk.q[j] >> 4) - 8) * qx[b * kQuantBlock + j + 16];
    }
    acc += static_cast<double>(dw) * static_cast<double>(dx[b]) * isum;
  }
  return acc;
}

// Quantized weights: every row of x is quantized to Q8 blocks first (quant.hpp), then each
// output is the integer dot product above. This is what every SIMD version computes.
void matmul_quantized(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias) {
  const int64_t T = x.rows(), K = x.cols(), N = w.rows();
  std::vector<char> memory(QuantizedActs::bytes_for(T, K) + 64);
  void* aligned = memory.data() + (64 - reinterpret_cast<uintptr_t>(memory.data()) % 64) % 64;
  QuantizedActs a = QuantizedActs::carve(aligned, T, K);
  for (int64_t t = 0; t < T; ++t) quantize_acts_row(x.row<float>(t), a, t);
  const bool r16 = is_interleaved(w.dtype);  // its rows gathered back into plain blocks
  const DType dt = r16 ? plain_of(w.dtype) : w.dtype;
  std::vector<uint8_t> plain(r16 ? dtype_bytes(dt, K) : 0);
  for (int64_t n = 0; n < N; ++n) {
    const double b = bias.empty() ? 0.0 : bias.ptr<float>()[n];
    if (r16) blocks_of_row(w.dtype, w.data, N, K, n, 0, K / kQuantBlock, plain.data());
    const void* wrow = r16 ? static_cast<const void*>(plain.data()) : w.row(n);
    for (int64_t t = 0; t < T; ++t) out.row<float>(t)[n] = static_cast<float>(quantized_dot(dt, wrow, a, t) + b);
  }
}

}  // namespace

void matmul(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_matmul(out, x, w, bias);
  if (is_quantized(w.dtype)) return matmul_quantized(out, x, w, bias);
  const int64_t T = x.rows(), K = x.cols(), N = w.rows();
  std::vector<float> wrow(static_cast<size_t>(K));
  for (int64_t n = 0; n < N; ++n) {
    weight_row_f32(w, n, wrow.data());
    const double b = bias.empty() ? 0.0 : bias.ptr<float>()[n];
    for (int64_t t = 0; t < T; ++t) {
      const float* xr = x.row<float>(t);
      double acc = 0.0;
      for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(xr[k]) * wrow[static_cast<size_t>(k)];
      out.row<float>(t)[n] = static_cast<float>(acc + b);
    }
  }
}

void add(const Tensor& out, const Tensor& a, const Tensor& b) {
  binary("add", out, a, b, [](float u, float v) { return u + v; });
}

void mul(const Tensor& out, const Tensor& a, const Tensor& b) {
  binary("mul", out, a, b, [](float u, float v) { return u * v; });
}

void scale(const Tensor& out, const Tensor& x, float s) {
  unary("scale", out, x, [s](float v) { return s * v; });
}

void add_scaled(const Tensor& out, const Tensor& x, float s) {
  binary("add_scaled", out, out, x, [s](float o, float v) { return o + s * v; });
}

void copy(const Tensor& out, const Tensor& x) {
  check_copy(out, x);
  for (int64_t r = 0; r < x.rows(); ++r) convert_row_from_f32(out.dtype, x.row<float>(r), out.row(r), x.cols());
}

void layernorm(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b, float eps) {
  check_norm("layernorm", out, x, w, b);
  const int64_t n = x.cols();
  for (int64_t r = 0; r < x.rows(); ++r) {
    const float* xr = x.row<float>(r);
    double mean = 0.0, var = 0.0;
    for (int64_t i = 0; i < n; ++i) mean += xr[i];
    mean /= static_cast<double>(n);
    for (int64_t i = 0; i < n; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    var /= static_cast<double>(n);
    const double inv = 1.0 / std::sqrt(var + eps);
    float* o = out.row<float>(r);
    for (int64_t i = 0; i < n; ++i) {
      const double bi = b.empty() ? 0.0 : b.ptr<float>()[i];
      o[i] = static_cast<float>((xr[i] - mean) * inv * w.ptr<float>()[i] + bi);
    }
  }
}

void rmsnorm(const Tensor& out, const Tensor& x, const Tensor& w, float eps) {
  check_norm("rmsnorm", out, x, w, Tensor{});
  const int64_t n = x.cols();
  for (int64_t r = 0; r < x.rows(); ++r) {
    const float* xr = x.row<float>(r);
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(n) + eps);
    float* o = out.row<float>(r);
    for (int64_t i = 0; i < n; ++i) o[i] = static_cast<float>(xr[i] * inv * w.ptr<float>()[i]);
  }
}

void softmax(const Tensor& out, const Tensor& x) {
  check_same_shape("softmax", out, x);
  const int64_t n = x.cols();
  for (int64_t r = 0; r < x.rows(); ++r) {
    const float* xr = x.row<float>(r);
    float* o = out.row<float>(r);
    const float mx = *std::max_element(xr, xr + n);
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(xr[i]) - mx);
    for (int64_t i = 0; i < n; ++i) o[i] = static_cast<float>(std::exp(static_cast<double>(xr[i]) - mx) / sum);
  }
}

void gelu(const Tensor& out, const Tensor& x) {
  unary("gelu", out, x, [](float v) {
    return static_cast<float>(0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))));
  });
}

void gelu_tanh(const Tensor& out, const Tensor& x) {
  unary("gelu_tanh", out, x, [](float v) {
    const double u = std::sqrt(2.0 / M_PI) * (v + 0.044715 * static_cast<double>(v) * v * v);
    return static_cast<float>(0.5 * v * (1.0 + std::tanh(u)));
  });
}

void relu(const Tensor& out, const Tensor& x) {
  unary("relu", out, x, [](float v) { return v > 0.0f ? v : 0.0f; });
}

void silu(const Tensor& out, const Tensor& x) { unary("silu", out, x, silu1); }

void silu_mul(const Tensor& out, const Tensor& gate, const Tensor& up) {
  binary("silu_mul", out, gate, up, [](float g, float u) { return silu1(g) * u; });
}

void rope(const Tensor& x, int n_heads, int head_dim, int rot_dims, int64_t pos0,
          const Tensor& cos, const Tensor& sin) {
  check_rope(x, n_heads, head_dim, rot_dims, pos0, cos, sin);
  const int half = rot_dims / 2;
  for (int64_t t = 0; t < x.rows(); ++t) {
    const float* c = cos.row<float>(pos0 + t);
    const float* s = sin.row<float>(pos0 + t);
    for (int h = 0; h < n_heads; ++h) {
      float* v = x.row<float>(t) + static_cast<int64_t>(h) * head_dim;
      for (int i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * c[i] - b * s[i];
        v[i + half] = b * c[i] + a * s[i];
      }
    }
  }
}

namespace {

// Value i of row j of a KV cache (F32 or F16).
double cache_value(const Tensor& cache, int64_t j, int64_t i) {
  return cache.dtype == DType::F16 ? f16_to_f32(cache.row<uint16_t>(j)[i]) : cache.row<float>(j)[i];
}

}  // namespace

void attention(const Tensor& out, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
               const AttentionArgs& a) {
  check_attention(out, q, k_cache, v_cache, a);
  const int64_t T = q.rows(), d = a.head_dim;
  const int group = a.n_heads / a.n_kv_heads;
  const int64_t n_keys = a.pos0 + T;
  std::vector<double> p(static_cast<size_t>(n_keys));
  for (int h = 0; h < a.n_heads; ++h) {
    const int64_t kv_off = static_cast<int64_t>(h / group) * d;
    const double slope = a.alibi_slopes.empty() ? 0.0 : a.alibi_slopes.ptr<float>()[h];
    for (int64_t t = 0; t < T; ++t) {
      const int64_t pos = a.pos0 + t;
      const int64_t first = a.window > 0 ? std::max<int64_t>(0, pos - a.window + 1) : 0;
      const float* qv = q.row<float>(t) + h * d;
      double mx = -INFINITY;
      for (int64_t j = first; j <= pos; ++j) {
        double s = 0.0;
        for (int64_t i = 0; i < d; ++i) s += static_cast<double>(qv[i]) * cache_value(k_cache, j, kv_off + i);
        p[static_cast<size_t>(j)] = a.scale * s + slope * static_cast<double>(j);
        mx = std::max(mx, p[static_cast<size_t>(j)]);
      }
      double sum = 0.0;
      for (int64_t j = first; j <= pos; ++j) sum += (p[static_cast<size_t>(j)] = std::exp(p[static_cast<size_t>(j)] - mx));
      float* o = out.row<float>(t) + h * d;
      for (int64_t i = 0; i < d; ++i) {
        double acc = 0.0;
        for (int64_t j = first; j <= pos; ++j) acc += p[static_cast<size_t>(j)] * cache_value(v_cache, j, kv_off + i);
        o[i] = static_cast<float>(acc / sum);
      }
      if (!a.probs.empty()) {
        float* pr = a.probs.select(h).row<float>(t);
        for (int64_t j = 0; j < a.probs.dim(2); ++j)
          pr[j] = (j >= first && j <= pos) ? static_cast<float>(p[static_cast<size_t>(j)] / sum) : 0.0f;
      }
    }
  }
}

int64_t argmax(const Tensor& x) {
  check_argmax(x);
  const float* v = x.row<float>(0);
  return std::max_element(v, v + x.cols()) - v;
}

void conv1d_causal(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias,
                   const Tensor& state) {
  check_conv1d(out, x, w, bias, state);
  const int64_t T = x.rows(), C = x.cols(), K = w.cols();
  std::vector<float> hist(static_cast<size_t>(K - 1 + T));
  for (int64_t c = 0; c < C; ++c) {
    const float* st = state.row<float>(c);
    for (int64_t k = 0; k < K - 1; ++k) hist[static_cast<size_t>(k)] = st[k + 1];
    for (int64_t t = 0; t < T; ++t) hist[static_cast<size_t>(K - 1 + t)] = x.row<float>(t)[c];
    const float* wc = w.row<float>(c);
    for (int64_t t = 0; t < T; ++t) {
      double acc = bias.empty() ? 0.0 : bias.ptr<float>()[c];
      for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(wc[k]) * hist[static_cast<size_t>(t + k)];
      out.row<float>(t)[c] = static_cast<float>(acc);
    }
    float* sw = state.row<float>(c);
    for (int64_t k = 0; k < K; ++k) sw[k] = hist[static_cast<size_t>(T - 1 + k)];
  }
}

void ssm_scan(const Tensor& y, const Tensor& x, const Tensor& dt, const Tensor& B,
              const Tensor& C, const Tensor& A_log, const Tensor& D, const Tensor& dt_bias,
              const Tensor& state, const SsmArgs& a) {
  check_ssm(y, x, dt, B, C, A_log, D, dt_bias, state, a);
  const int64_t T = x.rows(), P = a.head_dim, N = a.d_state;
  const int heads_per_group = a.n_heads / a.n_groups;
  float* S = state.ptr<float>();
  for (int64_t t = 0; t < T; ++t) {
    for (int h = 0; h < a.n_heads; ++h) {
      const int64_t g = h / heads_per_group;
      const float d = std::clamp(softplus1(dt.row<float>(t)[h] + dt_bias.ptr<float>()[h]), a.dt_min, a.dt_max);
      const float decay = std::exp(-std::exp(A_log.ptr<float>()[h]) * d);
      const float* xh = x.row<float>(t) + h * P;
      const float* Bg = B.row<float>(t) + g * N;
      const float* Cg = C.row<float>(t) + g * N;
      float* yh = y.row<float>(t) + h * P;
      for (int64_t p = 0; p < P; ++p) {
        float* s = S + (h * P + p) * N;
        double acc = 0.0;
        for (int64_t n = 0; n < N; ++n) {
          s[n] = decay * s[n] + d * xh[p] * Bg[n];
          acc += static_cast<double>(s[n]) * Cg[n];
        }
        yh[p] = static_cast<float>(acc + static_cast<double>(D.ptr<float>()[h]) * xh[p]);
      }
    }
  }
}

}  // namespace purellm::ref
