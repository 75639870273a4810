#include "apps/op_profile.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <vector>

namespace purellm::app {

template <class F>
void OpProfile::timed(const Key& key, double weight_bytes, F f) {
  if (!on_) return f();
  const Clock::time_point t0 = Clock::now();
  f();
  if (inner_.device() != Device::CPU) inner_.synchronize();
  Totals& row = rows_[key];
  row.seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  row.weight_bytes += weight_bytes;
  ++row.calls;
}

void OpProfile::start() {
  if (on_) return;
  on_ = true;
  started_ = Clock::now();
}

namespace {

std::string row_label(std::string_view op, DType dtype, int64_t rows, int64_t cols) {
  if (rows == 0) return std::string(op);
  std::string d(dtype_name(dtype));
  std::transform(d.begin(), d.end(), d.begin(), [](unsigned char c) { return std::tolower(c); });
  return std::string(op) + " " + d + " " + std::to_string(rows) + " x " + std::to_string(cols);
}

}  // namespace

void OpProfile::print(int64_t steps) const {
  if (!on_ || steps <= 0) return;
  const double wall = std::chrono::duration<double>(Clock::now() - started_).count();
  std::vector<std::pair<Key, Totals>> sorted(rows_.begin(), rows_.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
  const double per_step = 1e6 / static_cast<double>(steps);
  std::fprintf(stderr, "[profile] ops per decode step (%lld steps, %.1f us each):\n",
               static_cast<long long>(steps), wall * per_step);
  std::fprintf(stderr, "[profile]   %-28s %8s %10s %7s %13s\n", "op", "calls", "us", "share", "weights GB/s");
  double in_ops = 0;
  for (const auto& [key, t] : sorted) {
    const auto& [op, dtype, rows, cols] = key;
    in_ops += t.seconds;
    std::fprintf(stderr, "[profile]   %-28s %8.1f %10.1f %6.1f%%", row_label(op, dtype, rows, cols).c_str(),
                 static_cast<double>(t.calls) / static_cast<double>(steps), t.seconds * per_step,
                 100.0 * t.seconds / wall);
    if (t.weight_bytes > 0) std::fprintf(stderr, " %13.2f", t.weight_bytes / t.seconds / 1e9);
    std::fprintf(stderr, "\n");
  }
  const double outside = std::max(0.0, wall - in_ops);
  std::fprintf(stderr, "[profile]   %-28s %8s %10.1f %6.1f%%\n", "outside the ops", "", outside * per_step,
               100.0 * outside / wall);
}

void OpProfile::embed(const Tensor& out, const Tensor& table, std::span<const int32_t> ids) {
  timed("embed", [&] { inner_.embed(out, table, ids); });
}
void OpProfile::matmul(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias) {
  timed(Key{"matmul", w.dtype, w.rows(), w.cols()}, static_cast<double>(w.nbytes()),
        [&] { inner_.matmul(out, x, w, bias); });
}
void OpProfile::add(const Tensor& out, const Tensor& a, const Tensor& b) {
  timed("add", [&] { inner_.add(out, a, b); });
}
void OpProfile::mul(const Tensor& out, const Tensor& a, const Tensor& b) {
  timed("mul", [&] { inner_.mul(out, a, b); });
}
void OpProfile::scale(const Tensor& out, const Tensor& x, float s) {
  timed("scale", [&] { inner_.scale(out, x, s); });
}
void OpProfile::add_scaled(const Tensor& out, const Tensor& x, float s) {
  timed("add_scaled", [&] { inner_.add_scaled(out, x, s); });
}
void OpProfile::copy(const Tensor& out, const Tensor& x) {
  timed("copy", [&] { inner_.copy(out, x); });
}
void OpProfile::layernorm(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b, float eps) {
  timed("layernorm", [&] { inner_.layernorm(out, x, w, b, eps); });
}
void OpProfile::rmsnorm(const Tensor& out, const Tensor& x, const Tensor& w, float eps) {
  timed("rmsnorm", [&] { inner_.rmsnorm(out, x, w, eps); });
}
void OpProfile::softmax(const Tensor& out, const Tensor& x) {
  timed("softmax", [&] { inner_.softmax(out, x); });
}
void OpProfile::gelu(const Tensor& out, const Tensor& x) {
  timed("gelu", [&] { inner_.gelu(out, x); });
}
void OpProfile::gelu_tanh(const Tensor& out, const Tensor& x) {
  timed("gelu_tanh", [&] { inner_.gelu_tanh(out, x); });
}
void OpProfile::relu(const Tensor& out, const Tensor& x) {
  timed("relu", [&] { inner_.relu(out, x); });
}
void OpProfile::silu(const Tensor& out, const Tensor& x) {
  timed("silu", [&] { inner_.silu(out, x); });
}
void OpProfile::silu_mul(const Tensor& out, const Tensor& gate, const Tensor& up) {
  timed("silu_mul", [&] { inner_.silu_mul(out, gate, up); });
}
void OpProfile::rope(const Tensor& x, int n_heads, int head_dim, int rot_dims, int64_t pos0,
                     const Tensor& cos, const Tensor& sin) {
  timed("rope", [&] { inner_.rope(x, n_heads, head_dim, rot_dims, pos0, cos, sin); });
}
void OpProfile::attention(const Tensor& out, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                          const AttentionArgs& args) {
  timed("attention", [&] { inner_.attention(out, q, k_cache, v_cache, args); });
}
int64_t OpProfile::argmax(const Tensor& x) {
  int64_t i = 0;
  timed("argmax", [&] { i = inner_.argmax(x); });
  return i;
}
void OpProfile::conv1d_causal(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias,
                              const Tensor& state) {
  timed("conv1d_causal", [&] { inner_.conv1d_causal(out, x, w, bias, state); });
}
void OpProfile::ssm_scan(const Tensor& y, const Tensor& x, const Tensor& dt, const Tensor& B, const Tensor& C,
                         const Tensor& A_log, const Tensor& D, const Tensor& dt_bias, const Tensor& state,
                         const SsmArgs& args) {
  timed("ssm_scan", [&] { inner_.ssm_scan(y, x, dt, B, C, A_log, D, dt_bias, state, args); });
}

}  // namespace purellm::app
