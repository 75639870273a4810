#include "tests/host_mirror.hpp"

#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

namespace purellm::test {

namespace {

// Bytes from the first element of t to just past its last (rows are row_stride() apart).
size_t span_bytes(const Tensor& t) {
  return t.numel() == 0 ? 0 : dtype_bytes(t.dtype, (t.rows() - 1) * t.row_stride() + t.cols());
}

// The device copies of one op call's operands; outputs go back to the host in finish().
class Staging {
 public:
  explicit Staging(Backend& device) : dev_(device) {}

  Tensor in(const Tensor& host) { return stage(host, false); }
  Tensor out(const Tensor& host) { return stage(host, true); }  // copied in too: ops may read it
  Tensor weight(const Tensor& host) {
    if (host.empty()) return host;
    keep_.emplace_back();
    return dev_.adopt_weight(host, false, keep_.back());
  }

  void finish() {
    for (const Region& r : regions_)
      if (r.output) dev_.download(r.host, bytes_tensor(r.device, r.bytes));
  }

 private:
  struct Region {
    char* host;
    size_t bytes;
    void* device;
    bool output;
  };

  // A 1-D view of `bytes` bytes of device memory, for upload/download.
  Tensor bytes_tensor(void* device, size_t bytes) {
    return Tensor::contiguous(device, DType::F32, {static_cast<int64_t>(bytes / 4)}, dev_.device());
  }

  Tensor stage(const Tensor& host, bool output) {
    if (host.empty()) return host;
    auto* begin = static_cast<char*>(host.data);
    const size_t bytes = span_bytes(host);
    Region* region = nullptr;
    for (Region& r : regions_)
      if (begin >= r.host && begin + bytes <= r.host + r.bytes) region = &r;
    if (!region) {
      const size_t rounded = (bytes + 3) / 4 * 4;
      keep_.push_back(dev_.alloc(rounded));
      std::vector<char> padded(rounded, 0);
      std::memcpy(padded.data(), begin, bytes);
      dev_.upload(bytes_tensor(keep_.back().get(), rounded), padded.data());
      regions_.push_back({begin, bytes, keep_.back().get(), false});
      region = &regions_.back();
    }
    region->output |= output;
    Tensor t = host;
    t.data = static_cast<char*>(region->device) + (begin - region->host);
    t.device = dev_.device();
    return t;
  }

  Backend& dev_;
  std::vector<Region> regions_;
  std::vector<std::shared_ptr<void>> keep_;
};

class HostMirror final : public Backend {
 public:
  explicit HostMirror(Backend& device) : dev_(device) {}

  std::string name() const override { return dev_.name(); }
  Device device() const override { return Device::CPU; }

  std::shared_ptr<void> alloc(size_t bytes) override {
    void* p = std::calloc(1, bytes ? bytes : 1);
    if (!p) throw std::bad_alloc();
    return std::shared_ptr<void>(p, std::free);
  }
  void upload(const Tensor& dst, const void* host) override { std::memcpy(dst.data, host, dst.nbytes()); }
  void download(void* host, const Tensor& src) override { std::memcpy(host, src.data, src.nbytes()); }
  Tensor adopt_weight(const Tensor& host, bool, std::shared_ptr<void>&) override { return host; }
  bool supports(Op op, DType w) const override { return dev_.supports(op, w); }

  void embed(const Tensor& out, const Tensor& table, std::span<const int32_t> ids) override {
    run([&](Staging& s) { dev_.embed(s.out(out), s.weight(table), ids); });
  }
  void matmul(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias) override {
    run([&](Staging& s) { dev_.matmul(s.out(out), s.in(x), s.weight(w), s.in(bias)); });
  }
  void add(const Tensor& out, const Tensor& a, const Tensor& b) override {
    run([&](Staging& s) { dev_.add(s.out(out), s.in(a), s.in(b)); });
  }
  void mul(const Tensor& out, const Tensor& a, const Tensor& b) override {
    run([&](Staging& s) { dev_.mul(s.out(out), s.in(a), s.in(b)); });
  }
  void scale(const Tensor& out, const Tensor& x, float v) override {
    run([&](Staging& s) { dev_.scale(s.out(out), s.in(x), v); });
  }
  void add_scaled(const Tensor& out, const Tensor& x, float v) override {
    run([&](Staging& s) { dev_.add_scaled(s.out(out), s.in(x), v); });
  }
  void copy(const Tensor& out, const Tensor& x) override {
    run([&](Staging& s) { dev_.copy(s.out(out), s.in(x)); });
  }
  void layernorm(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b, float eps) override {
    run([&](Staging& s) { dev_.layernorm(s.out(out), s.in(x), s.in(w), s.in(b), eps); });
  }
  void rmsnorm(const Tensor& out, const Tensor& x, const Tensor& w, float eps) override {
    run([&](Staging& s) { dev_.rmsnorm(s.out(out), s.in(x), s.in(w), eps); });
  }
  void softmax(const Tensor& out, const Tensor& x) override {
    run([&](Staging& s) { dev_.softmax(s.out(out), s.in(x)); });
  }
  void gelu(const Tensor& out, const Tensor& x) override {
    run([&](Staging& s) { dev_.gelu(s.out(out), s.in(x)); });
  }
  void gelu_tanh(const Tensor& out, const Tensor& x) override {
    run([&](Staging& s) { dev_.gelu_tanh(s.out(out), s.in(x)); });
  }
  void relu(const Tensor& out, const Tensor& x) override {
    run([&](Staging& s) { dev_.relu(s.out(out), s.in(x)); });
  }
  void silu(const Tensor& out, const Tensor& x) override {
    run([&](Staging& s) { dev_.silu(s.out(out), s.in(x)); });
  }
  void silu_mul(const Tensor& out, const Tensor& gate, const Tensor& up) override {
    run([&](Staging& s) { dev_.silu_mul(s.out(out), s.in(gate), s.in(up)); });
  }
  void rope(const Tensor& x, int n_heads, int head_dim, int rot_dims, int64_t pos0, const Tensor& cos,
            const Tensor& sin) override {
    run([&](Staging& s) { dev_.rope(s.out(x), n_heads, head_dim, rot_dims, pos0, s.in(cos), s.in(sin)); });
  }
  void attention(const Tensor& out, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                 const AttentionArgs& args) override {
    run([&](Staging& s) {
      AttentionArgs a = args;
      a.alibi_slopes = s.in(args.alibi_slopes);
      a.probs = s.out(args.probs);
      dev_.attention(s.out(out), s.in(q), s.in(k_cache), s.in(v_cache), a);
    });
  }
  int64_t argmax(const Tensor& x) override {
    int64_t index = 0;
    run([&](Staging& s) { index = dev_.argmax(s.in(x)); });
    return index;
  }
  void conv1d_causal(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias,
                     const Tensor& state) override {
    run([&](Staging& s) { dev_.conv1d_causal(s.out(out), s.in(x), s.in(w), s.in(bias), s.out(state)); });
  }
  void ssm_scan(const Tensor& y, const Tensor& x, const Tensor& dt, const Tensor& B, const Tensor& C,
                const Tensor& A_log, const Tensor& D, const Tensor& dt_bias, const Tensor& state,
                const SsmArgs& args) override {
    run([&](Staging& s) {
      dev_.ssm_scan(s.out(y), s.in(x), s.in(dt), s.in(B), s.in(C), s.in(A_log), s.in(D), s.in(dt_bias),
                    s.out(state), args);
    });
  }

 private:
  template <class F>
  void run(F op) {
    Staging s(dev_);
    op(s);
    s.finish();
  }

  Backend& dev_;
};

}  // namespace

std::unique_ptr<Backend> host_mirror(Backend& device) { return std::make_unique<HostMirror>(device); }

}  // namespace purellm::test
