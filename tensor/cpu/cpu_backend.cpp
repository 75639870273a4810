#include "tensor/cpu/cpu_backend.hpp"

#include <omp.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "tensor/cpu/kernels.hpp"
#include "tensor/cpu/ops.hpp"
#include "tensor/cpu/reference.hpp"

namespace purellm::cpu {

std::string_view isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::SSE2: return "sse2";
    case Isa::AVX2: return "avx2";
    case Isa::AVX512: return "avx512";
    case Isa::AVX512VNNI: return "avx512vnni";
    case Isa::NEON: return "neon";
  }
  return "?";
}

std::vector<Isa> compiled_isas() {
  std::vector<Isa> isas{Isa::Scalar};
#ifdef PURELLM_KERNELS_SSE2
  isas.push_back(Isa::SSE2);
#endif
#ifdef PURELLM_KERNELS_AVX2
  isas.push_back(Isa::AVX2);
#endif
#ifdef PURELLM_KERNELS_AVX512
  isas.push_back(Isa::AVX512);
#endif
#ifdef PURELLM_KERNELS_AVX512VNNI
  isas.push_back(Isa::AVX512VNNI);
#endif
#ifdef PURELLM_KERNELS_NEON
  isas.push_back(Isa::NEON);
#endif
  return isas;
}

namespace {

#if defined(__x86_64__) || defined(__i386__)
// CPUID leaf 1, ECX bit 29: clang 14's __builtin_cpu_supports does not know "f16c".
bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}

// CPUID leaf 7, ECX bit 11: AVX512_VNNI (vpdpbusd).
bool cpu_has_avx512vnni() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid_count(7, 0, &a, &b, &c, &d) && ((c >> 11) & 1u);
}
#endif

bool cpu_has(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return true;
#if defined(__x86_64__) || defined(__i386__)
    case Isa::SSE2: return __builtin_cpu_supports("sse2");
    case Isa::AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
    case Isa::AVX512: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    case Isa::AVX512VNNI: return cpu_has(Isa::AVX512) && cpu_has_avx512vnni();
#endif
#if defined(__aarch64__)
    case Isa::NEON: return true;
#endif
    default: return false;
  }
}

}  // namespace

bool isa_available(Isa isa) {
  for (Isa c : compiled_isas())
    if (c == isa) return cpu_has(isa);
  return false;
}

Isa default_isa() {
  if (const char* forced = std::getenv("PURELLM_ISA"); forced && *forced) {
    for (Isa isa : compiled_isas())
      if (isa_name(isa) == forced) {
        if (!isa_available(isa))
          throw std::runtime_error(std::string("PURELLM_ISA=") + forced + ": this CPU does not support it");
        return isa;
      }
    std::string msg = std::string("PURELLM_ISA=") + forced + " is not compiled in; choose one of:";
    for (Isa isa : compiled_isas()) (msg += ' ') += isa_name(isa);
    throw std::runtime_error(msg);
  }
  Isa best = Isa::Scalar;
  for (Isa isa : compiled_isas())
    if (cpu_has(isa)) best = isa;
  return best;
}

void set_num_threads(int n) {
  if (n > 0) omp_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

namespace {

// Host memory freed with std::free; 64-byte aligned.
std::shared_ptr<void> host_alloc(size_t bytes) {
  const size_t rounded = (bytes + AlignedBuffer::kAlign - 1) / AlignedBuffer::kAlign * AlignedBuffer::kAlign;
  void* p = std::aligned_alloc(AlignedBuffer::kAlign, rounded ? rounded : AlignedBuffer::kAlign);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, rounded);
  return std::shared_ptr<void>(p, std::free);
}

// Each op runs the reference when the backend is Scalar, else the fast op on this ISA's
// kernel table (ops.hpp).
class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(Isa isa) : isa_(isa), k_(kernels_for(isa)) {}

  std::string name() const override { return "cpu (" + std::string(isa_name(isa_)) + ")"; }
  Device device() const override { return Device::CPU; }

  std::shared_ptr<void> alloc(size_t bytes) override { return host_alloc(bytes); }
  void upload(const Tensor& dst, const void* host) override { std::memcpy(dst.data, host, dst.nbytes()); }
  void download(void* host, const Tensor& src) override { std::memcpy(host, src.data, src.nbytes()); }
  // Weights are read in place, except Q8_0 / Q4_0 matrices where this ISA has the R16 kernels:
  // those are rearranged once into that layout (quant.hpp), in place when host is rewritable.
  Tensor adopt_weight(const Tensor& host, bool rewritable, std::shared_ptr<void>& keep) override {
    const bool plain_quant = host.dtype == DType::Q8_0 || host.dtype == DType::Q4_0;
    if (!k_ || !k_->qmatmul_r16 || !plain_quant || host.ndim != 2 || !host.is_contiguous() || host.rows() < kR16)
      return host;
    Tensor t = host;
    if (!rewritable) {
      auto buffer = std::make_shared<AlignedBuffer>(host.nbytes(), host.nbytes() >= (size_t{4} << 20));
      keep = std::shared_ptr<void>(buffer, buffer->data());
      t.data = buffer->data();
    }
    interleave_rows(host.dtype, host.data, t.data, host.rows(), host.cols());
    t.dtype = interleaved_of(host.dtype);
    return t;
  }

  bool supports(Op op, DType w) const override {
    if (op == Op::Matmul || op == Op::Embed)
      return w == DType::F32 || w == DType::F16 || w == DType::BF16 || is_quantized(w);
    if (op == Op::Attention || op == Op::Copy) return w == DType::F32 || w == DType::F16;  // F16 KV caches
    return w == DType::F32;
  }

  void embed(const Tensor& out, const Tensor& table, std::span<const int32_t> ids) override {
    k_ ? fast::embed(*k_, out, table, ids) : ref::embed(out, table, ids);
  }
  void matmul(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias) override {
    k_ ? fast::matmul(*k_, scratch_, out, x, w, bias) : ref::matmul(out, x, w, bias);
  }
  void add(const Tensor& out, const Tensor& a, const Tensor& b) override {
    k_ ? fast::add(*k_, out, a, b) : ref::add(out, a, b);
  }
  void mul(const Tensor& out, const Tensor& a, const Tensor& b) override {
    k_ ? fast::mul(*k_, out, a, b) : ref::mul(out, a, b);
  }
  void scale(const Tensor& out, const Tensor& x, float s) override {
    k_ ? fast::scale(*k_, out, x, s) : ref::scale(out, x, s);
  }
  void add_scaled(const Tensor& out, const Tensor& x, float s) override {
    k_ ? fast::add_scaled(*k_, out, x, s) : ref::add_scaled(out, x, s);
  }
  void copy(const Tensor& out, const Tensor& x) override { k_ ? fast::copy(*k_, out, x) : ref::copy(out, x); }
  void layernorm(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b, float eps) override {
    k_ ? fast::layernorm(*k_, out, x, w, b, eps) : ref::layernorm(out, x, w, b, eps);
  }
  void rmsnorm(const Tensor& out, const Tensor& x, const Tensor& w, float eps) override {
    k_ ? fast::rmsnorm(*k_, out, x, w, eps) : ref::rmsnorm(out, x, w, eps);
  }
  void softmax(const Tensor& out, const Tensor& x) override {
    k_ ? fast::softmax(*k_, out, x) : ref::softmax(out, x);
  }
  void gelu(const Tensor& out, const Tensor& x) override { k_ ? fast::gelu(*k_, out, x) : ref::gelu(out, x); }
  void gelu_tanh(const Tensor& out, const Tensor& x) override {
    k_ ? fast::gelu_tanh(*k_, out, x) : ref::gelu_tanh(out, x);
  }
  void relu(const Tensor& out, const Tensor& x) override { k_ ? fast::relu(*k_, out, x) : ref::relu(out, x); }
  void silu(const Tensor& out, const Tensor& x) override { k_ ? fast::silu(*k_, out, x) : ref::silu(out, x); }
  void silu_mul(const Tensor& out, const Tensor& gate, const Tensor& up) override {
    k_ ? fast::silu_mul(*k_, out, gate, up) : ref::silu_mul(out, gate, up);
  }
  void rope(const Tensor& x, int n_heads, int head_dim, int rot_dims, int64_t pos0, const Tensor& cos,
            const Tensor& sin) override {
    k_ ? fast::rope(*k_, x, n_heads, head_dim, rot_dims, pos0, cos, sin)
       : ref::rope(x, n_heads, head_dim, rot_dims, pos0, cos, sin);
  }
  void attention(const Tensor& out, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                 const AttentionArgs& args) override {
    k_ ? fast::attention(*k_, scratch_, out, q, k_cache, v_cache, args)
       : ref::attention(out, q, k_cache, v_cache, args);
  }
  int64_t argmax(const Tensor& x) override { return k_ ? fast::argmax(*k_, x) : ref::argmax(x); }
  void conv1d_causal(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias,
                     const Tensor& state) override {
    k_ ? fast::conv1d_causal(*k_, scratch_, out, x, w, bias, state) : ref::conv1d_causal(out, x, w, bias, state);
  }
  void ssm_scan(const Tensor& y, const Tensor& x, const Tensor& dt, const Tensor& B, const Tensor& C,
                const Tensor& A_log, const Tensor& D, const Tensor& dt_bias, const Tensor& state,
                const SsmArgs& args) override {
    k_ ? fast::ssm_scan(*k_, y, x, dt, B, C, A_log, D, dt_bias, state, args)
       : ref::ssm_scan(y, x, dt, B, C, A_log, D, dt_bias, state, args);
  }

 private:
  Isa isa_;
  const Kernels* k_;  // null: Scalar, the reference kernels
  Scratch scratch_;
};

}  // namespace

std::unique_ptr<Backend> make_backend(Isa isa) {
  if (!isa_available(isa))
    throw std::runtime_error("CPU kernels for " + std::string(isa_name(isa)) + " are not available here");
  return std::make_unique<CpuBackend>(isa);
}

}  // namespace purellm::cpu

namespace purellm {

Backend& cpu_backend() {
  static std::unique_ptr<Backend> backend = cpu::make_backend(cpu::default_isa());
  return *backend;
}

Tensor Backend::alloc_tensor(DType dtype, std::initializer_list<int64_t> shape, std::shared_ptr<void>& keep) {
  Tensor t = Tensor::contiguous(nullptr, dtype, shape, device());
  keep = alloc(t.nbytes());
  t.data = keep.get();
  return t;
}

}  // namespace purellm
