// Elementwise, row-wise and lookup ops of the fast CPU backend: checks, then threads over rows.
#include "tensor/cpu/ops.hpp"

#include <cmath>
#include <cstring>

#include "tensor/cpu/reference.hpp"
#include "tensor/quant.hpp"

namespace purellm::cpu {

void Scratch::reserve(int threads, size_t n) {
  if (bufs_.size() < static_cast<size_t>(threads)) bufs_.resize(static_cast<size_t>(threads));
  if (n > per_thread_) per_thread_ = n;
  for (AlignedBuffer& b : bufs_)
    if (b.size() < per_thread_ * sizeof(float)) b = AlignedBuffer(per_thread_ * sizeof(float));
}

float* Scratch::shared(size_t n) {
  if (shared_.size() < n * sizeof(float)) shared_ = AlignedBuffer(n * sizeof(float));
  return shared_.as<float>();
}

void SpeedSplit::plan(int64_t n, int parts, int64_t align, int64_t* bounds) const {
  double speed[kMaxThreads], total = 0.0;
  for (int t = 0; t < parts; ++t) {
    const float v = speed_[t].load(std::memory_order_relaxed);
    speed[t] = v > 0.0f ? v : 1.0;
    total += speed[t];
  }
  const int64_t blocks = (n + align - 1) / align;
  double before = 0.0;
  bounds[0] = 0;
  for (int t = 0; t < parts; ++t) {
    before += speed[t];
    bounds[t + 1] = t == parts - 1 ? n : std::min<int64_t>(n, std::llround(static_cast<double>(blocks) * before / total) * align);
  }
}

void SpeedSplit::measured(int parts, const int64_t* bounds, const double* seconds) {
  if (parts < 2 || parts > kMaxThreads) return;
  double speed[kMaxThreads], mean = 0.0;
  for (int t = 0; t < parts; ++t) {
    const int64_t items = bounds[t + 1] - bounds[t];
    if (seconds[t] <= 0.0 || items <= 0) return;  // a thread without work says nothing
    speed[t] = static_cast<double>(items) / seconds[t];
    mean += speed[t] / parts;
  }
  constexpr double kWeight = 0.25;  // of the newest region in the running average
  for (int t = 0; t < parts; ++t) {
    const double now = std::clamp(speed[t] / mean, 0.5, 2.0);  // a preempted thread moves it little
    const float old = speed_[t].load(std::memory_order_relaxed);
    speed_[t].store(static_cast<float>(old > 0.0f ? (1.0 - kWeight) * old + kWeight * now : now),
                    std::memory_order_relaxed);
  }
}

namespace fast {
namespace {

// f(r, c0, n) over pieces of up to kPiece columns of each row of a [rows, cols] operand, in
// parallel when the operand is large. Pieces let one long row use several threads.
template <class F>
void for_row_pieces(int64_t rows, int64_t cols, F f) {
  constexpr int64_t kPiece = 8192;
  const int64_t pieces = (cols + kPiece - 1) / kPiece;
  parallel_for(rows * pieces, rows * cols, [&](int64_t i) {
    const int64_t r = i / pieces, c0 = i % pieces * kPiece;
    f(r, c0, std::min(kPiece, cols - c0));
  });
}

using Unary = void (*)(float* out, const float* x, int64_t n);
using Binary = void (*)(float* out, const float* a, const float* b, int64_t n);

void unary(const char* op, Unary kernel, const Tensor& out, const Tensor& x) {
  ref::check_same_shape(op, out, x);
  for_row_pieces(x.rows(), x.cols(), [&](int64_t r, int64_t c0, int64_t n) {
    kernel(out.row<float>(r) + c0, x.row<float>(r) + c0, n);
  });
}

void binary(const char* op, Binary kernel, const Tensor& out, const Tensor& a, const Tensor& b) {
  ref::check_same_shape(op, out, a);
  ref::check_same_shape(op, out, b);
  for_row_pieces(a.rows(), a.cols(), [&](int64_t r, int64_t c0, int64_t n) {
    kernel(out.row<float>(r) + c0, a.row<float>(r) + c0, b.row<float>(r) + c0, n);
  });
}

// f(r) for every row, in parallel when the operand is large.
template <class F>
void for_rows(const Tensor& x, F f) {
  parallel_for(x.rows(), x.rows() * x.cols(), f);
}

}  // namespace

void embed(const Kernels& k, const Tensor& out, const Tensor& table, std::span<const int32_t> ids) {
  ref::check_embed(out, table, ids);
  const int64_t D = table.cols();
  parallel_for(static_cast<int64_t>(ids.size()), static_cast<int64_t>(ids.size()) * D, [&](int64_t t) {
    float* o = out.row<float>(t);
    const int64_t id = ids[static_cast<size_t>(t)];
    switch (table.dtype) {
      case DType::F16: return k.f16_to_f32(o, table.row<uint16_t>(id), D);
      case DType::BF16: return k.bf16_to_f32(o, table.row<uint16_t>(id), D);
      case DType::Q8_0: return dequantize_row_q8_0(table.row(id), o, D);
      case DType::Q4_0: return dequantize_row_q4_0(table.row(id), o, D);
      case DType::Q8_0_R16:
      case DType::Q4_0_R16: return dequantize_row_r16(table.dtype, table.data, table.rows(), D, id, o);
      default: std::memcpy(o, table.row<float>(id), static_cast<size_t>(D) * sizeof(float));
    }
  });
}

void add(const Kernels& k, const Tensor& out, const Tensor& a, const Tensor& b) { binary("add", k.add, out, a, b); }
void mul(const Kernels& k, const Tensor& out, const Tensor& a, const Tensor& b) { binary("mul", k.mul, out, a, b); }

void scale(const Kernels& k, const Tensor& out, const Tensor& x, float s) {
  ref::check_same_shape("scale", out, x);
  for_row_pieces(x.rows(), x.cols(), [&](int64_t r, int64_t c0, int64_t n) {
    k.scale(out.row<float>(r) + c0, x.row<float>(r) + c0, s, n);
  });
}

void add_scaled(const Kernels& k, const Tensor& out, const Tensor& x, float s) {
  ref::check_same_shape("add_scaled", out, x);
  for_row_pieces(x.rows(), x.cols(), [&](int64_t r, int64_t c0, int64_t n) {
    k.add_scaled(out.row<float>(r) + c0, x.row<float>(r) + c0, s, n);
  });
}

void copy(const Kernels& k, const Tensor& out, const Tensor& x) {
  ref::check_copy(out, x);
  for_row_pieces(x.rows(), x.cols(), [&](int64_t r, int64_t c0, int64_t n) {
    if (out.dtype == DType::F16) k.f32_to_f16(out.row<uint16_t>(r) + c0, x.row<float>(r) + c0, n);
    else std::memmove(out.row<float>(r) + c0, x.row<float>(r) + c0, static_cast<size_t>(n) * sizeof(float));
  });
}

void gelu(const Kernels& k, const Tensor& out, const Tensor& x) { unary("gelu", k.gelu, out, x); }
void gelu_tanh(const Kernels& k, const Tensor& out, const Tensor& x) { unary("gelu_tanh", k.gelu_tanh, out, x); }
void relu(const Kernels& k, const Tensor& out, const Tensor& x) { unary("relu", k.relu, out, x); }
void silu(const Kernels& k, const Tensor& out, const Tensor& x) { unary("silu", k.silu, out, x); }
void silu_mul(const Kernels& k, const Tensor& out, const Tensor& gate, const Tensor& up) {
  binary("silu_mul", k.silu_mul, out, gate, up);
}

void layernorm(const Kernels& k, const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b,
               float eps) {
  ref::check_norm("layernorm", out, x, w, b);
  const float* bias = b.empty() ? nullptr : b.ptr<float>();
  for_rows(x, [&](int64_t r) {
    k.layernorm(out.row<float>(r), x.row<float>(r), w.ptr<float>(), bias, eps, x.cols());
  });
}

void rmsnorm(const Kernels& k, const Tensor& out, const Tensor& x, const Tensor& w, float eps) {
  ref::check_norm("rmsnorm", out, x, w, Tensor{});
  for_rows(x, [&](int64_t r) { k.rmsnorm(out.row<float>(r), x.row<float>(r), w.ptr<float>(), eps, x.cols()); });
}

void softmax(const Kernels& k, const Tensor& out, const Tensor& x) {
  ref::check_same_shape("softmax", out, x);
  for_rows(x, [&](int64_t r) { k.softmax(out.row<float>(r), x.row<float>(r), x.cols()); });
}

void rope(const Kernels& k, const Tensor& x, int n_heads, int head_dim, int rot_dims, int64_t pos0,
          const Tensor& cos, const Tensor& sin) {
  ref::check_rope(x, n_heads, head_dim, rot_dims, pos0, cos, sin);
  for_rows(x, [&](int64_t t) {
    const float* c = cos.row<float>(pos0 + t);
    const float* s = sin.row<float>(pos0 + t);
    for (int h = 0; h < n_heads; ++h) k.rope(x.row<float>(t) + int64_t{h} * head_dim, c, s, rot_dims / 2);
  });
}

int64_t argmax(const Kernels& k, const Tensor& x) {
  ref::check_argmax(x);
  return k.argmax(x.row<float>(0), x.cols());
}

}  // namespace fast
}  // namespace purellm::cpu
