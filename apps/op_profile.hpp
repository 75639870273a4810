// ask --profile, op by op: a Backend that passes every call on to the backend it wraps and, once
// started, times it. Matrix products are kept apart by weight dtype and shape, with the weight
// bytes they read, so the table says how fast each matrix streams (decode reads every weight
// once per token). A device backend is synchronized after each op, so its times are its own.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <tuple>

#include "tensor/backend.hpp"

namespace purellm::app {

class OpProfile final : public Backend {
 public:
  explicit OpProfile(Backend& inner) : inner_(inner) {}

  // Times the calls from the first start() on (ask: the decode steps, not the prompt's pass).
  void start();
  // To stderr: per op, the calls, microseconds and share of the wall time per step since
  // start(), slowest first, the weight GB/s of the matrix products, and the time outside the
  // ops (model code, sampling, printing).
  void print(int64_t steps) const;

  std::string name() const override { return inner_.name(); }
  Device device() const override { return inner_.device(); }
  std::shared_ptr<void> alloc(size_t bytes) override { return inner_.alloc(bytes); }
  void upload(const Tensor& dst, const void* host) override { inner_.upload(dst, host); }
  void download(void* host, const Tensor& src) override { inner_.download(host, src); }
  Tensor adopt_weight(const Tensor& host, bool rewritable, std::shared_ptr<void>& keep) override {
    return inner_.adopt_weight(host, rewritable, keep);
  }
  void synchronize() override { inner_.synchronize(); }
  bool supports(Op op, DType weight_dtype) const override { return inner_.supports(op, weight_dtype); }

  void embed(const Tensor& out, const Tensor& table, std::span<const int32_t> ids) override;
  void matmul(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias) override;
  void add(const Tensor& out, const Tensor& a, const Tensor& b) override;
  void mul(const Tensor& out, const Tensor& a, const Tensor& b) override;
  void scale(const Tensor& out, const Tensor& x, float s) override;
  void add_scaled(const Tensor& out, const Tensor& x, float s) override;
  void copy(const Tensor& out, const Tensor& x) override;
  void layernorm(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b, float eps) override;
  void rmsnorm(const Tensor& out, const Tensor& x, const Tensor& w, float eps) override;
  void softmax(const Tensor& out, const Tensor& x) override;
  void gelu(const Tensor& out, const Tensor& x) override;
  void gelu_tanh(const Tensor& out, const Tensor& x) override;
  void relu(const Tensor& out, const Tensor& x) override;
  void silu(const Tensor& out, const Tensor& x) override;
  void silu_mul(const Tensor& out, const Tensor& gate, const Tensor& up) override;
  void rope(const Tensor& x, int n_heads, int head_dim, int rot_dims, int64_t pos0, const Tensor& cos,
            const Tensor& sin) override;
  void attention(const Tensor& out, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                 const AttentionArgs& args) override;
  int64_t argmax(const Tensor& x) override;
  void conv1d_causal(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias,
                     const Tensor& state) override;
  void ssm_scan(const Tensor& y, const Tensor& x, const Tensor& dt, const Tensor& B, const Tensor& C,
                const Tensor& A_log, const Tensor& D, const Tensor& dt_bias, const Tensor& state,
                const SsmArgs& args) override;

 private:
  using Clock = std::chrono::steady_clock;
  // An op's row: its name, and for a matrix product the weight's dtype and shape.
  using Key = std::tuple<std::string_view, DType, int64_t, int64_t>;
  struct Totals {
    int64_t calls = 0;
    double seconds = 0, weight_bytes = 0;
  };

  // Runs f; when started, adds its time (and `weight_bytes`) to the row `key`.
  template <class F>
  void timed(const Key& key, double weight_bytes, F f);
  template <class F>
  void timed(std::string_view op, F f) {
    timed(Key{op, DType::F32, 0, 0}, 0.0, f);
  }

  Backend& inner_;
  bool on_ = false;
  Clock::time_point started_;
  std::map<Key, Totals> rows_;
};

}  // namespace purellm::app
