// Every CPU backend op on every instruction set compiled into this binary, against the scalar
// reference (make_backend(Isa::Scalar)) on random data.
// Compiled again with PURELLM_TEST_DEVICE defined (test_cuda, test_cuda_emulated), the same
// tests run against a device backend instead (device_under_test.hpp), through a host mirror
// that copies operands to the device and results back.
//
// Tolerances, |got - want| <= atol + rtol * |want|, with inputs drawn from [-1, 1]:
//   exact (0, 0):      add, mul, scale, copy, relu, embed, argmax, row conversions
//   (1e-6, 1e-6):      add_scaled (one fused rounding), rope
//   (1e-6, 1e-5):      gelu, gelu_tanh, silu, silu_mul, softmax (few-ulp vector exp/erfc)
//   (1e-5, 1e-5):      layernorm, rmsnorm (float vs double sums over a row)
//   (1e-5 sqrt(K), 1e-5): matmul over K terms; attention, conv1d, ssm_scan alike with K = the
//                      length of their sums. Quantized matmuls too: every implementation
//                      multiplies the same integers (one activation quantizer), so only the
//                      float sum over K/32 scaled blocks differs.
// The reference sums in double; these bounds are a few times the float rounding error, far
// below what a wrong index, a lost tail element or a missing term would produce.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <new>
#include <cstring>
#include <deque>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tensor/cpu/cpu_backend.hpp"
#include "tensor/cpu/kernels.hpp"
#include "tensor/cpu/ops.hpp"
#include "tensor/cpu/reference.hpp"
#include "tensor/quant.hpp"
#ifdef PURELLM_TEST_DEVICE
#include "tests/device_under_test.hpp"
#include "tests/host_mirror.hpp"
#endif

using namespace purellm;
using purellm::cpu::Isa;

namespace purellm::cpu {
void PrintTo(Isa isa, std::ostream* os) { *os << isa_name(isa); }  // "GetParam() = avx2"
}  // namespace purellm::cpu

// Counts operator new calls, so a test can check that warm ops do not allocate. clang's
// sanitizer runtimes define operator new in a static library (a second definition does not
// link), so there the counter is left out and that test is skipped.
static std::atomic<int64_t> g_news{0};
#if defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define PURELLM_NO_NEW_COUNTER 1
#endif
#endif
#ifndef PURELLM_NO_NEW_COUNTER
[[gnu::noinline]] void* operator new(size_t n) {
  ++g_news;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
// The nothrow form too (std::stable_sort's buffer): every new here must pair with our delete.
[[gnu::noinline]] void* operator new(size_t n, const std::nothrow_t&) noexcept {
  ++g_news;
  return std::malloc(n ? n : 1);
}
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, size_t) noexcept { std::free(p); }
#endif

namespace {

const std::vector<int64_t> kSizes = {1, 3, 7, 15, 17, 31, 33, 127, 4097};

void expect_close(const Tensor& got, const Tensor& want, double atol, double rtol, const std::string& what);

class Ops : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
#ifdef PURELLM_TEST_DEVICE
    std::string why;
    Backend* device = test::device_under_test(&why);
    if (!device) GTEST_SKIP() << PURELLM_TEST_DEVICE << " backend not available: " << why;
    fast_ = test::host_mirror(*device);
    ref_ = cpu::make_backend(Isa::Scalar);
    threads_ = cpu::num_threads();
    return;
#endif
    const Isa isa = GetParam();
    bool compiled = false;
    for (Isa c : cpu::compiled_isas()) compiled |= c == isa;
    if (!compiled) GTEST_SKIP() << cpu::isa_name(isa) << " kernels are not compiled into this binary";
    if (!cpu::isa_available(isa)) GTEST_SKIP() << cpu::isa_name(isa) << " not supported by this CPU";
    fast_ = cpu::make_backend(isa);
    ref_ = cpu::make_backend(Isa::Scalar);
    threads_ = cpu::num_threads();
  }
  void TearDown() override { cpu::set_num_threads(threads_); }

  // A [rows, cols] F32 matrix of uniform values in [lo, hi] whose rows are `pad` floats
  // further apart than cols (pad > 0: a non-contiguous view, like q inside a fused qkv).
  Tensor random(int64_t rows, int64_t cols, int64_t pad = 0, float lo = -1.0f, float hi = 1.0f) {
    Tensor full = zeros(DType::F32, rows, cols + pad);
    std::uniform_real_distribution<float> u(lo, hi);
    for (int64_t i = 0; i < full.numel(); ++i) full.ptr<float>()[i] = u(rng_);
    return full.cols_view(0, cols);
  }
  Tensor zeros(DType dtype, int64_t rows, int64_t cols, int64_t pad = 0) {
    store_.push_back(OwnedTensor::zeros(dtype, {rows, cols + pad}));
    return store_.back().view.cols_view(0, cols);
  }
  // A same-shaped, same-strided copy of t (so the two backends see identical layouts).
  Tensor clone(const Tensor& t) {
    Tensor c = zeros(t.dtype, t.rows(), t.row_stride());
    std::memcpy(c.data, t.data, dtype_bytes(t.dtype, t.rows() * t.row_stride()));
    return c.cols_view(0, t.cols());
  }
  // t converted to dtype (the weights both backends read), rows padded by pad elements.
  Tensor convert(const Tensor& t, DType dtype, int64_t pad = 0) {
    if (dtype == DType::F32 && pad == 0) return t;
    Tensor c = zeros(dtype, t.rows(), t.cols(), pad);
    for (int64_t r = 0; r < t.rows(); ++r) convert_row_from_f32(dtype, t.row<float>(r), c.row(r), t.cols());
    return c;
  }

  // fast_ on w_fast against the reference on w_ref (the same weights, maybe in another layout):
  // a decode GEMV, a short prompt and a long one (the GEMM road for plain quantized weights), on
  // one and two threads (threads split rows of W).
  void check_matmul_threads(const Tensor& w_fast, const Tensor& w_ref, const Tensor& bias, const std::string& what) {
    const int64_t K = w_ref.cols(), N = w_ref.rows();
    for (int64_t T : {1, 37, 97}) {
      const Tensor x = random(T, K), want = zeros(DType::F32, T, N);
      ref_->matmul(want, x, w_ref, bias);
      for (int threads : {1, 2}) {
        cpu::set_num_threads(threads);
        const Tensor got = zeros(DType::F32, T, N);
        fast_->matmul(got, x, w_fast, bias);
        expect_close(got, want, 1e-5 * std::sqrt(static_cast<double>(K)), 1e-5,
                     what + " T " + std::to_string(T) + " threads " + std::to_string(threads));
      }
    }
  }

  std::unique_ptr<Backend> fast_, ref_;
  std::mt19937 rng_{1234};
  std::deque<OwnedTensor> store_;
  int threads_ = 1;
};

#ifdef PURELLM_TEST_DEVICE
INSTANTIATE_TEST_SUITE_P(Device, Ops, ::testing::Values(Isa::Scalar), [](const auto&) { return std::string(PURELLM_TEST_DEVICE); });
#else
std::string isa_label(const ::testing::TestParamInfo<Isa>& info) {
  return std::string(cpu::isa_name(info.param));
}

INSTANTIATE_TEST_SUITE_P(Cpu, Ops, ::testing::Values(Isa::SSE2, Isa::AVX2, Isa::AVX512, Isa::AVX512VNNI, Isa::NEON), isa_label);
#endif

// Checks |got - want| <= atol + rtol * |want| element by element (NaN only matches NaN) and
// reports the first few mismatches with their position.
void expect_close(const Tensor& got, const Tensor& want, double atol, double rtol, const std::string& what) {
  ASSERT_EQ(got.rows(), want.rows()) << what;
  ASSERT_EQ(got.cols(), want.cols()) << what;
  int bad = 0;
  for (int64_t r = 0; r < got.rows(); ++r)
    for (int64_t c = 0; c < got.cols(); ++c) {
      const double g = got.row<float>(r)[c], w = want.row<float>(r)[c];
      const bool ok = std::isnan(w) ? std::isnan(g) : std::abs(g - w) <= atol + rtol * std::abs(w);
      if (!ok && ++bad <= 5)
        ADD_FAILURE() << what << ": [" << r << ", " << c << "] got " << g << ", want " << w << " (diff "
                      << std::abs(g - w) << ")";
    }
}

std::string shape(int64_t rows, int64_t cols, int64_t pad) {
  return "[" + std::to_string(rows) + ", " + std::to_string(cols) + "] pad " + std::to_string(pad);
}

// ---- elementwise ------------------------------------------------------------------------------

TEST_P(Ops, Elementwise) {
  for (int64_t cols : kSizes)
    for (int64_t rows : {1, 3})
      for (int64_t pad : {0, 5}) {
        const std::string at = shape(rows, cols, pad);
        const Tensor a = random(rows, cols, pad), b = random(rows, cols, pad);
        auto both = [&](double atol, double rtol, const std::string& op, auto run) {
          const Tensor got = zeros(DType::F32, rows, cols, pad), want = zeros(DType::F32, rows, cols, pad);
          run(*fast_, got);
          run(*ref_, want);
          expect_close(got, want, atol, rtol, op + " " + at);
        };
        both(0, 0, "add", [&](Backend& be, const Tensor& o) { be.add(o, a, b); });
        both(0, 0, "mul", [&](Backend& be, const Tensor& o) { be.mul(o, a, b); });
        both(0, 0, "scale", [&](Backend& be, const Tensor& o) { be.scale(o, a, -1.7f); });
        both(0, 0, "copy", [&](Backend& be, const Tensor& o) { be.copy(o, a); });
        both(0, 0, "relu", [&](Backend& be, const Tensor& o) { be.relu(o, a); });
        both(1e-6, 1e-6, "add_scaled", [&](Backend& be, const Tensor& o) {
          be.copy(o, b);
          be.add_scaled(o, a, 0.3f);
        });
        both(1e-6, 1e-5, "silu_mul", [&](Backend& be, const Tensor& o) { be.silu_mul(o, a, b); });
      }
}

// Activations over a wide range, including the tails where exp/erf saturate.
TEST_P(Ops, Activations) {
  for (int64_t cols : kSizes) {
    const Tensor x = random(2, cols, 3, -12.0f, 12.0f);
    for (const char* op : {"gelu", "gelu_tanh", "silu"}) {
      const Tensor got = zeros(DType::F32, 2, cols), want = zeros(DType::F32, 2, cols);
      for (auto [be, out] : {std::pair{fast_.get(), got}, std::pair{ref_.get(), want}}) {
        if (std::string(op) == "gelu") be->gelu(out, x);
        if (std::string(op) == "gelu_tanh") be->gelu_tanh(out, x);
        if (std::string(op) == "silu") be->silu(out, x);
      }
      expect_close(got, want, 1e-6, 1e-5, std::string(op) + " cols " + std::to_string(cols));
    }
  }
}

// In place: out aliases the input, as the Backend contract allows.
TEST_P(Ops, InPlace) {
  const Tensor x = random(3, 33, 2), w = random(1, 33);
  Tensor a = clone(x), b = clone(x);
  fast_->silu(a, a);
  ref_->silu(b, b);
  expect_close(a, b, 1e-6, 1e-5, "silu in place");
  fast_->rmsnorm(a, a, w, 1e-5f);
  ref_->rmsnorm(b, b, w, 1e-5f);
  expect_close(a, b, 1e-5, 1e-5, "rmsnorm in place");
  fast_->softmax(a, a);
  ref_->softmax(b, b);
  expect_close(a, b, 1e-6, 1e-5, "softmax in place");
}

// ---- rows -------------------------------------------------------------------------------------

TEST_P(Ops, Norms) {
  for (int64_t cols : kSizes)
    for (int64_t pad : {0, 3}) {
      const std::string at = shape(4, cols, pad);
      const Tensor x = random(4, cols, pad, -3.0f, 5.0f), w = random(1, cols), b = random(1, cols);
      const Tensor got = zeros(DType::F32, 4, cols, pad), want = zeros(DType::F32, 4, cols, pad);
      fast_->layernorm(got, x, w, b, 1e-5f);
      ref_->layernorm(want, x, w, b, 1e-5f);
      expect_close(got, want, 1e-5, 1e-5, "layernorm " + at);
      fast_->layernorm(got, x, w, Tensor{}, 1e-5f);
      ref_->layernorm(want, x, w, Tensor{}, 1e-5f);
      expect_close(got, want, 1e-5, 1e-5, "layernorm without bias " + at);
      fast_->rmsnorm(got, x, w, 1e-6f);
      ref_->rmsnorm(want, x, w, 1e-6f);
      expect_close(got, want, 1e-5, 1e-5, "rmsnorm " + at);
    }
}

TEST_P(Ops, Softmax) {
  for (int64_t cols : kSizes)
    for (int64_t pad : {0, 4}) {
      const Tensor x = random(3, cols, pad, -20.0f, 20.0f);
      const Tensor got = zeros(DType::F32, 3, cols, pad), want = zeros(DType::F32, 3, cols, pad);
      fast_->softmax(got, x);
      ref_->softmax(want, x);
      expect_close(got, want, 1e-6, 1e-5, "softmax " + shape(3, cols, pad));
    }
}

TEST_P(Ops, Argmax) {
  for (int64_t cols : kSizes) {
    const Tensor x = random(1, cols);
    EXPECT_EQ(fast_->argmax(x), ref_->argmax(x)) << "cols " << cols;
    // Ties: the first of equal maxima wins.
    x.ptr<float>()[cols / 2] = 2.0f;
    x.ptr<float>()[cols - 1] = 2.0f;
    EXPECT_EQ(fast_->argmax(x), cols / 2) << "tie, cols " << cols;
  }
  const Tensor x = random(1, 50257);
  x.ptr<float>()[31337] = 5.0f;
  EXPECT_EQ(fast_->argmax(x), 31337);
}

TEST_P(Ops, Rope) {
  struct Case {
    int n_heads, head_dim, rot_dims;
    int64_t T, pos0;
  };
  for (Case c : {Case{1, 2, 2, 1, 0}, Case{4, 16, 16, 3, 5}, Case{3, 34, 34, 7, 0}, Case{2, 80, 32, 5, 11},
                 Case{12, 64, 64, 17, 100}, Case{2, 256, 64, 1, 1000}}) {
    const int half = c.rot_dims / 2;
    const Tensor cos = random(1024, half), sin = random(1024, half);
    const Tensor x = random(c.T, int64_t{c.n_heads} * c.head_dim, 3);
    Tensor got = clone(x), want = clone(x);
    fast_->rope(got, c.n_heads, c.head_dim, c.rot_dims, c.pos0, cos, sin);
    ref_->rope(want, c.n_heads, c.head_dim, c.rot_dims, c.pos0, cos, sin);
    expect_close(got, want, 1e-6, 1e-6,
                 "rope heads " + std::to_string(c.n_heads) + " x " + std::to_string(c.head_dim) + " rot " +
                     std::to_string(c.rot_dims) + " pos0 " + std::to_string(c.pos0));
  }
}

// ---- embed and row conversions ----------------------------------------------------------------

TEST_P(Ops, Embed) {
  const std::vector<int32_t> ids = {0, 5, 2, 5, 9};
  for (int64_t cols : kSizes)
    for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
      const Tensor table = convert(random(10, cols), dt, 3);
      const Tensor got = zeros(DType::F32, 5, cols, 1), want = zeros(DType::F32, 5, cols, 1);
      fast_->embed(got, table, ids);
      ref_->embed(want, table, ids);
      expect_close(got, want, 0, 0, "embed " + std::string(dtype_name(dt)) + " cols " + std::to_string(cols));
    }
}

// Every F16 and BF16 bit pattern (zeros, subnormals, infinities, NaNs) converts exactly.
TEST_P(Ops, ConvertsEvery16BitPattern) {
  for (DType dt : {DType::F16, DType::BF16}) {
    const Tensor table = zeros(dt, 256, 256);
    for (int i = 0; i < 65536; ++i) table.ptr<uint16_t>()[i] = static_cast<uint16_t>(i);
    std::vector<int32_t> ids(256);
    for (int i = 0; i < 256; ++i) ids[static_cast<size_t>(i)] = i;
    const Tensor got = zeros(DType::F32, 256, 256), want = zeros(DType::F32, 256, 256);
    fast_->embed(got, table, ids);
    ref_->embed(want, table, ids);
    for (int i = 0; i < 65536; ++i) {
      const float g = got.ptr<float>()[i], w = want.ptr<float>()[i];
      if (std::isnan(w))
        ASSERT_TRUE(std::isnan(g)) << dtype_name(dt) << " pattern " << i;
      else
        ASSERT_EQ(std::memcmp(&g, &w, 4), 0) << dtype_name(dt) << " pattern " << i << ": " << g << " vs " << w;
    }
  }
}

// ---- matmul -----------------------------------------------------------------------------------

void check_matmul(Backend& fast, Backend& ref, const Tensor& x, const Tensor& w, const Tensor& bias,
                  Tensor got, Tensor want, const std::string& what) {
  fast.matmul(got, x, w, bias);
  ref.matmul(want, x, w, bias);
  expect_close(got, want, 1e-5 * std::sqrt(static_cast<double>(x.cols())), 1e-5, what);
}

TEST_P(Ops, Matmul) {
  for (int64_t T : {1, 3, 17})
    for (int64_t K : {1, 3, 17, 33, 127, 4097})
      for (int64_t N : {1, 7, 17, 33, 127})
        for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
          const int64_t pad = (K + N) % 3;  // some operands strided
          const Tensor x = random(T, K, pad), w = convert(random(N, K), dt, pad);
          const Tensor bias = N % 2 ? random(1, N) : Tensor{};
          const std::string what = "matmul T " + std::to_string(T) + " K " + std::to_string(K) + " N " +
                                   std::to_string(N) + " " + std::string(dtype_name(dt)) + (bias.empty() ? "" : " +bias");
          check_matmul(*fast_, *ref_, x, w, bias, zeros(DType::F32, T, N, pad), zeros(DType::F32, T, N, pad), what);
        }
}

// Shapes that cross every GEMM blocking boundary (K past one depth block, T past one row
// block, N past one packed block per thread) on one and two threads.
TEST_P(Ops, MatmulLargeBlocks) {
  const int64_t T = 150, K = 300, N = 3100;
  const Tensor x = random(T, K), w = random(N, K), bias = random(1, N);
  const Tensor want = zeros(DType::F32, T, N);
  ref_->matmul(want, x, w, bias);
  for (int threads : {1, 2}) {
    cpu::set_num_threads(threads);
    const Tensor got = zeros(DType::F32, T, N);
    fast_->matmul(got, x, w, bias);
    expect_close(got, want, 1e-5 * std::sqrt(double{K}), 1e-5, "large matmul, threads " + std::to_string(threads));
  }
  for (DType dt : {DType::F16, DType::BF16}) {  // a large GEMV per 16-bit format
    const Tensor w16 = convert(random(2053, 1031), dt, 1), x1 = random(1, 1031);
    check_matmul(*fast_, *ref_, x1, w16, Tensor{}, zeros(DType::F32, 1, 2053), zeros(DType::F32, 1, 2053),
                 "large gemv " + std::string(dtype_name(dt)));
  }
}

// Thread counts 1 and 2 agree for every threaded op.
TEST_P(Ops, ThreadCountsAgree) {
#ifdef PURELLM_TEST_DEVICE
  GTEST_SKIP() << "CPU only: the thread count is a CPU backend setting";
#endif
  const Tensor x1 = random(1, 4099), w = random(2051, 4099), xT = random(9, 4099);
  const Tensor big = random(64, 4097), nw = random(1, 4097);
  std::vector<Tensor> outs[2];
  int64_t amax[2] = {};
  for (int i = 0; i < 2; ++i) {
    cpu::set_num_threads(i + 1);
    Tensor gemv = zeros(DType::F32, 1, 2051), gemm = zeros(DType::F32, 9, 2051), norm = zeros(DType::F32, 64, 4097),
           act = zeros(DType::F32, 64, 4097);
    fast_->matmul(gemv, x1, w, Tensor{});
    fast_->matmul(gemm, xT, w, Tensor{});
    fast_->rmsnorm(norm, big, nw, 1e-5f);
    fast_->gelu(act, big);
    amax[i] = fast_->argmax(gemv);
    outs[i] = {gemv, gemm, norm, act};
  }
  for (size_t j = 0; j < outs[0].size(); ++j) expect_close(outs[1][j], outs[0][j], 1e-6, 1e-6, "threads 1 vs 2, op " + std::to_string(j));
  EXPECT_EQ(amax[0], amax[1]);
}

// ---- attention --------------------------------------------------------------------------------

struct AttnCase {
  int n_heads, n_kv_heads, head_dim;
  int64_t T, pos0, window;
  bool alibi, probs;
};

std::string describe(const AttnCase& c) {
  return "heads " + std::to_string(c.n_heads) + "/" + std::to_string(c.n_kv_heads) + " d " +
         std::to_string(c.head_dim) + " T " + std::to_string(c.T) + " pos0 " + std::to_string(c.pos0) +
         " window " + std::to_string(c.window) + (c.alibi ? " alibi" : "") + (c.probs ? " probs" : "");
}

TEST_P(Ops, Attention) {
  const std::vector<AttnCase> cases = {
      {1, 1, 1, 1, 0, 0, false, false},    {4, 4, 16, 5, 0, 0, false, true},     // MHA prefill
      {8, 2, 33, 3, 17, 0, false, false},  {6, 1, 64, 1, 200, 0, false, true},   // GQA, MQA decode
      {4, 2, 7, 7, 10, 5, false, true},    {2, 2, 31, 17, 0, 4, false, false},   // sliding window
      {4, 4, 15, 3, 30, 0, true, true},    {8, 4, 32, 2, 40, 8, true, false},    // ALiBi
      {2, 1, 127, 1, 1023, 0, false, false},                                     // long context
      {32, 4, 64, 1, 300, 0, false, true}, {6, 2, 80, 4, 20, 0, false, false},   // groups of 8, 3
      {71, 1, 64, 2, 50, 0, true, false},                                        // MQA, many heads
      {12, 12, 64, 1, 300, 0, false, true}, {5, 5, 20, 2, 40, 6, true, false},  // MHA decode: GPT-2, odd
      {12, 2, 40, 1, 70, 30, false, true},  {10, 2, 33, 2, 50, 0, true, false},  // groups of 6, 5
      // 16 queries and more: the tiled road (blocks of 256 keys, panels of mr queries)
      {12, 12, 64, 40, 0, 0, false, false},  {8, 2, 33, 300, 17, 0, false, false},  // MHA, GQA: 2 blocks
      {6, 1, 64, 20, 290, 0, true, false},   {4, 2, 7, 50, 10, 5, false, false},    // MQA ALiBi, window
      {2, 2, 31, 100, 200, 70, true, false}, {71, 1, 64, 17, 0, 0, false, false},   // window across blocks
      {32, 4, 64, 77, 3, 0, false, false},   {3, 3, 130, 16, 0, 0, false, false},   // groups of 8, wide d
      {4, 4, 16, 20, 0, 0, false, true},                                           // probs: the row road
  };
  for (DType kv : {DType::F32, DType::F16}) {  // F16: the cache of quantized models (both read it)
    for (const AttnCase& c : cases) {
      if (!fast_->supports(Op::Attention, kv)) continue;
      const int64_t S = c.pos0 + c.T + 3, kv_cols = int64_t{c.n_kv_heads} * c.head_dim;
      const Tensor q = random(c.T, int64_t{c.n_heads} * c.head_dim, 2);
      const Tensor kc = convert(random(S, kv_cols, 5), kv, 5), vc = convert(random(S, kv_cols, 1), kv, 1);
      Tensor got = zeros(DType::F32, c.T, q.cols(), 1), want = zeros(DType::F32, c.T, q.cols(), 1);
      AttentionArgs a;
      a.n_heads = c.n_heads;
      a.n_kv_heads = c.n_kv_heads;
      a.head_dim = c.head_dim;
      a.pos0 = c.pos0;
      a.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
      a.window = c.window;
      if (c.alibi) a.alibi_slopes = random(1, c.n_heads, 0, 0.01f, 0.5f).reshape({c.n_heads});
      AttentionArgs b = a;
      if (c.probs) {
        store_.push_back(OwnedTensor::zeros(DType::F32, {c.n_heads, c.T, c.pos0 + c.T}));
        a.probs = store_.back().view;
        store_.push_back(OwnedTensor::zeros(DType::F32, {c.n_heads, c.T, c.pos0 + c.T}));
        b.probs = store_.back().view;
      }
      fast_->attention(got, q, kc, vc, a);
      ref_->attention(want, q, kc, vc, b);
      const double atol = 1e-5 * std::sqrt(static_cast<double>(c.pos0 + c.T));
      expect_close(got, want, atol, 1e-5, "attention " + describe(c) + " " + std::string(dtype_name(kv)));
      if (c.probs)
        expect_close(a.probs.reshape({c.n_heads * c.T, c.pos0 + c.T}), b.probs.reshape({c.n_heads * c.T, c.pos0 + c.T}),
                     1e-6, 1e-5, "attention probs " + describe(c));
    }
  }
}

// Appending to an F16 KV cache: copy rounds each value to nearest even, as f32_to_f16 (values
// past F16's range become inf, tiny ones subnormal), on odd widths and strided rows.
TEST_P(Ops, CopyIntoF16Cache) {
  if (!fast_->supports(Op::Copy, DType::F16)) GTEST_SKIP() << fast_->name() << " has no F16 cache";
  for (int64_t cols : {1, 15, 37, 1030}) {
    const Tensor x = random(3, cols, 2, -2.0f, 2.0f);
    x.row<float>(0)[0] = 70000.0f;  // past 65504
    if (cols > 1) x.row<float>(1)[cols - 1] = 3e-7f;  // an F16 subnormal
    const Tensor got = zeros(DType::F16, 3, cols, 1), want = zeros(DType::F16, 3, cols, 1);
    fast_->copy(got, x);
    ref_->copy(want, x);
    for (int64_t r = 0; r < 3; ++r)
      for (int64_t i = 0; i < cols; ++i) {
        ASSERT_EQ(got.row<uint16_t>(r)[i], want.row<uint16_t>(r)[i]) << "cols " << cols << " at " << r << ", " << i;
        ASSERT_EQ(want.row<uint16_t>(r)[i], f32_to_f16(x.row<float>(r)[i]));
      }
  }
  EXPECT_THROW(fast_->copy(zeros(DType::BF16, 2, 8), random(2, 8)), std::invalid_argument);
}

// ---- Mamba2 ops -------------------------------------------------------------------------------

// Three calls (T = 5, then 1 as in decode, then 3, continuing the state) against the
// reference doing the same, and in place (out aliasing x). K = 4 is Mamba2's (its own
// decode loop), 1 and 3 take the general one.
TEST_P(Ops, Conv1dCausal) {
  for (int64_t C : {1, 17, 33, 1030})
    for (int64_t K : {1, 3, 4}) {
      const Tensor w = random(C, K), bias = C % 2 ? random(1, C) : Tensor{};
      Tensor s_fast = random(C, K), s_ref = clone(s_fast);
      for (int64_t T : {5, 1, 3}) {
        const Tensor x = random(T, C, 2);
        const Tensor got = zeros(DType::F32, T, C), want = zeros(DType::F32, T, C);
        fast_->conv1d_causal(got, x, w, bias, s_fast);
        ref_->conv1d_causal(want, x, w, bias, s_ref);
        const std::string at = "conv1d C " + std::to_string(C) + " K " + std::to_string(K) + " T " + std::to_string(T);
        expect_close(got, want, 1e-5 * std::sqrt(double(K)), 1e-5, at);
        expect_close(s_fast, s_ref, 0, 0, at + " state");
        Tensor inplace = clone(x);
        Tensor s2 = clone(s_ref);
        ref_->conv1d_causal(want, x, w, bias, s2);
        Tensor s3 = clone(s_fast);
        fast_->conv1d_causal(inplace, inplace, w, bias, s3);
        expect_close(inplace, want, 1e-5 * std::sqrt(double(K)), 1e-5, at + " in place");
      }
    }
}

TEST_P(Ops, SsmScan) {
  struct Case {
    int n_heads, head_dim, d_state, n_groups;
  };
  for (Case c : {Case{1, 1, 1, 1}, Case{4, 7, 16, 1}, Case{4, 16, 33, 2}, Case{8, 8, 128, 4}}) {
    SsmArgs a;
    a.n_heads = c.n_heads;
    a.head_dim = c.head_dim;
    a.d_state = c.d_state;
    a.n_groups = c.n_groups;
    a.dt_min = 0.001f;
    a.dt_max = 0.5f;
    const Tensor A_log = random(1, c.n_heads, 0, -1.0f, 1.0f).reshape({c.n_heads});
    const Tensor D = random(1, c.n_heads).reshape({c.n_heads});
    const Tensor dt_bias = random(1, c.n_heads).reshape({c.n_heads});
    const int64_t P = int64_t{c.n_heads} * c.head_dim, G = int64_t{c.n_groups} * c.d_state;
    Tensor s_fast = random(c.n_heads, int64_t{c.head_dim} * c.d_state), s_ref = clone(s_fast);
    for (int64_t T : {6, 1}) {
      const Tensor x = random(T, P, 1), dt = random(T, c.n_heads, 0, -3.0f, 3.0f);
      const Tensor B = random(T, G, 2), C = random(T, G);
      const Tensor got = zeros(DType::F32, T, P), want = zeros(DType::F32, T, P);
      fast_->ssm_scan(got, x, dt, B, C, A_log, D, dt_bias, s_fast, a);
      ref_->ssm_scan(want, x, dt, B, C, A_log, D, dt_bias, s_ref, a);
      const std::string at = "ssm heads " + std::to_string(c.n_heads) + " P " + std::to_string(c.head_dim) + " N " +
                             std::to_string(c.d_state) + " groups " + std::to_string(c.n_groups) + " T " + std::to_string(T);
      expect_close(got, want, 1e-5 * std::sqrt(double(c.d_state)), 1e-5, at);
      expect_close(s_fast, s_ref, 1e-5, 1e-5, at + " state");
    }
  }
}

// Once an op has seen its shapes, calling it again allocates nothing (scratch is reused).
TEST_P(Ops, WarmOpsDoNotAllocate) {
#ifdef PURELLM_TEST_DEVICE
  GTEST_SKIP() << "CPU only: the host mirror allocates device copies on every call";
#endif
#ifdef PURELLM_NO_NEW_COUNTER
  GTEST_SKIP() << "operator new cannot be counted under clang's sanitizer runtime";
#endif
  const Tensor x1 = random(1, 768), xT = random(20, 768), w = random(300, 768), o1 = zeros(DType::F32, 1, 300),
               oT = zeros(DType::F32, 20, 300), nw = random(1, 768);
  const Tensor xP = random(100, 768), oP = zeros(DType::F32, 100, 300);  // prefill: the GEMM road
  const Tensor q = random(3, 4 * 16), kv = random(40, 2 * 16), att = zeros(DType::F32, 3, 4 * 16);
  const Tensor qP = random(30, 4 * 16), attP = zeros(DType::F32, 30, 4 * 16);  // the tiled road
  const Tensor cx = random(5, 600), cw = random(600, 4), cs = random(600, 4), co = zeros(DType::F32, 5, 600);
  const bool quantized = fast_->supports(Op::Matmul, DType::Q8_0);
  const Tensor w8 = quantized ? convert(w, DType::Q8_0) : w, w4 = quantized ? convert(w, DType::Q4_0) : w;
  AttentionArgs a;
  a.n_heads = 4;
  a.n_kv_heads = 2;
  a.head_dim = 16;
  a.pos0 = 30;
  AttentionArgs aP = a;
  aP.pos0 = 0;
  auto run = [&] {
    fast_->matmul(o1, x1, w, Tensor{});
    fast_->matmul(oT, xT, w, Tensor{});
    fast_->rmsnorm(xT, xT, nw.reshape({768}), 1e-5f);
    fast_->softmax(xT, xT);
    fast_->attention(att, q, kv, kv, a);
    fast_->attention(attP, qP, kv, kv, aP);
    fast_->conv1d_causal(co, cx, cw, Tensor{}, cs);
    if (quantized) {
      fast_->matmul(o1, x1, w8, Tensor{});
      fast_->matmul(oT, xT, w4, Tensor{});
      fast_->matmul(oP, xP, w8, Tensor{});
    }
  };
  for (int threads : {1, 2}) {
    cpu::set_num_threads(threads);
    run();
    const int64_t before = g_news.load();
    run();
    EXPECT_EQ(g_news.load() - before, 0) << "operator new calls in warm ops, threads " << threads;
  }
}

// ---- quantized weights (Q8_0, Q4_0) -------------------------------------------------------------

// Both backends must take quantized weights; a device that refuses them (supports()) skips.
#define SKIP_UNLESS_QUANTIZED(backend)                                                            \
  if (!(backend).supports(Op::Matmul, DType::Q8_0) || !(backend).supports(Op::Matmul, DType::Q4_0)) \
  GTEST_SKIP() << (backend).name() << " does not take quantized weights"

const std::vector<int64_t> kQuantRows = {1, 3, 7, 17, 33, 127};
const std::vector<int64_t> kQuantK = {32, 64, 4096 + 32};

TEST_P(Ops, QuantizedMatmul) {
  SKIP_UNLESS_QUANTIZED(*fast_);
  for (DType dt : {DType::Q8_0, DType::Q4_0})
    for (int64_t T : {1, 2, 5, 17, 97})  // 97: past kQuantGemmTokens, the F32 GEMM road
      for (int64_t K : kQuantK)
        for (int64_t N : kQuantRows) {
          const int64_t pad = (N % 2) * 32;  // some weights strided by a block, x by a float
          const Tensor x = random(T, K, N % 3), w = convert(random(N, K), dt, pad);
          const Tensor bias = N % 2 ? random(1, N) : Tensor{};
          const std::string what = std::string(dtype_name(dt)) + " matmul T " + std::to_string(T) + " K " +
                                   std::to_string(K) + " N " + std::to_string(N) + (bias.empty() ? "" : " +bias");
          check_matmul(*fast_, *ref_, x, w, bias, zeros(DType::F32, T, N, 1), zeros(DType::F32, T, N, 1), what);
        }
}

// A decode GEMV, a short prompt (integer kernels) and a long one (the F32 GEMM road), on one and
// two threads (threads split rows of W).
TEST_P(Ops, QuantizedMatmulThreads) {
  SKIP_UNLESS_QUANTIZED(*fast_);
  for (DType dt : {DType::Q8_0, DType::Q4_0}) {
    const Tensor w = convert(random(1031, 320), dt);
    check_matmul_threads(w, w, random(1, 1031), std::string(dtype_name(dt)));
  }
}

// The quantized result is close to the F32 product: a few percent of the output's scale for
// Q8_0 (both operands rounded to 8 bits); for Q4_0 (steps of amax / 8, errors of about
// 0.07 sqrt(K) on these inputs) only a sanity bound.
TEST_P(Ops, QuantizedMatmulApproximatesF32) {
  SKIP_UNLESS_QUANTIZED(*fast_);
  const int64_t T = 3, K = 1024, N = 64;
  const Tensor x = random(T, K), w = random(N, K);
  const Tensor exact = zeros(DType::F32, T, N);
  ref_->matmul(exact, x, w, Tensor{});
  double rms = 0.0;
  for (int64_t i = 0; i < T * N; ++i) rms += double{exact.ptr<float>()[i]} * exact.ptr<float>()[i];
  rms = std::sqrt(rms / static_cast<double>(T * N));
  for (auto [dt, rel] : {std::pair{DType::Q8_0, 0.02}, std::pair{DType::Q4_0, 0.4}}) {
    const Tensor got = zeros(DType::F32, T, N);
    fast_->matmul(got, x, convert(w, dt), Tensor{});
    expect_close(got, exact, rel * rms, 0, std::string(dtype_name(dt)) + " vs F32");
  }
}

TEST_P(Ops, QuantizedEmbed) {
  SKIP_UNLESS_QUANTIZED(*fast_);
  const std::vector<int32_t> ids = {0, 5, 2, 5, 9};
  for (int64_t cols : {32, 96, 4096 + 32})
    for (DType dt : {DType::Q8_0, DType::Q4_0}) {
      const Tensor table = convert(random(10, cols), dt, 32);
      const Tensor got = zeros(DType::F32, 5, cols, 1), want = zeros(DType::F32, 5, cols, 1);
      fast_->embed(got, table, ids);
      ref_->embed(want, table, ids);
      expect_close(got, want, 0, 0, "embed " + std::string(dtype_name(dt)) + " cols " + std::to_string(cols));
    }
}

TEST_P(Ops, QuantizedBadShapesThrow) {
  SKIP_UNLESS_QUANTIZED(*fast_);
  const Tensor x = random(2, 48), out = zeros(DType::F32, 2, 4);
  // 48 values are not whole blocks: such a weight cannot exist (the loader keeps it F32).
  Tensor w = zeros(DType::Q8_0, 4, 64).cols_view(0, 48);
  EXPECT_THROW(fast_->matmul(out, x, w, Tensor{}), std::invalid_argument);
  EXPECT_THROW(convert_row_from_f32(DType::Q4_0, x.row<float>(0), zeros(DType::Q4_0, 1, 64).data, 48),
               std::invalid_argument);
}

// ---- Q8_0_R16 / Q4_0_R16: rows interleaved by 16 (the AVX-512 VNNI layouts, quant.hpp) ---------

// The rows of a contiguous Q8_0 / Q4_0 matrix in its R16 layout.
Tensor interleaved(const Tensor& q, std::deque<OwnedTensor>& store) {
  store.push_back(OwnedTensor::zeros(interleaved_of(q.dtype), {q.rows(), q.cols()}));
  interleave_rows(q.dtype, q.data, store.back().view.data, q.rows(), q.cols());
  return store.back().view;
}

#define SKIP_UNLESS_R16(backend)                                                                          \
  if (!(backend).supports(Op::Matmul, DType::Q8_0_R16) || !(backend).supports(Op::Matmul, DType::Q4_0_R16)) \
  GTEST_SKIP() << (backend).name() << " does not take the R16 layouts"

// The fast backend on R16 weights against the reference on the same weights as plain rows: every
// road (decode GEMV, short prompts, the F32 GEMM's packing) on group counts with and without a
// tail of plain rows. On an ISA without the R16 kernels the short roads fall back to the reference.
TEST_P(Ops, QuantizedMatmulR16) {
  SKIP_UNLESS_R16(*fast_);
  for (DType dt : {DType::Q8_0, DType::Q4_0})
    for (int64_t T : {1, 2, 5, 17, 97})
      for (int64_t K : kQuantK)
        for (int64_t N : {16, 17, 33, 48, 127}) {
          const Tensor x = random(T, K, N % 3), plain = convert(random(N, K), dt);
          const Tensor w = interleaved(plain, store_), bias = N % 2 ? random(1, N) : Tensor{};
          const Tensor got = zeros(DType::F32, T, N, 1), want = zeros(DType::F32, T, N, 1);
          fast_->matmul(got, x, w, bias);
          ref_->matmul(want, x, plain, bias);
          expect_close(got, want, 1e-5 * std::sqrt(static_cast<double>(K)), 1e-5,
                       std::string(dtype_name(w.dtype)) + " matmul T " + std::to_string(T) + " K " +
                           std::to_string(K) + " N " + std::to_string(N));
        }
}

// What the loader does: the backend adopts a Q8_0 / Q4_0 matrix, into the R16 layout where its
// kernels take it, and computes the same products (threads split rows on group boundaries).
TEST_P(Ops, QuantizedAdoptR16) {
  SKIP_UNLESS_R16(*fast_);  // (a device backend keeps its weights to itself)
  const cpu::Kernels* k = cpu::kernels_for(GetParam());
  for (DType dt : {DType::Q8_0, DType::Q4_0}) {
    const Tensor plain = convert(random(1031, 320), dt), bias = random(1, 1031);
    std::shared_ptr<void> keep, keep_rewritten;
    const Tensor w = fast_->adopt_weight(plain, false, keep);  // plain stays for the reference
    const Tensor copy = clone(plain), rewritten = fast_->adopt_weight(copy, true, keep_rewritten);
    EXPECT_EQ(w.dtype, k && k->qmatmul_r16 ? interleaved_of(dt) : dt);
    EXPECT_EQ(is_interleaved(w.dtype), keep != nullptr);
    EXPECT_EQ(rewritten.data, copy.data);  // in place: no second copy
    EXPECT_EQ(keep_rewritten, nullptr);
    EXPECT_EQ(std::memcmp(rewritten.data, w.data, w.nbytes()), 0);
    check_matmul_threads(w, plain, bias, "adopted " + std::string(dtype_name(dt)));
  }
}

TEST_P(Ops, QuantizedEmbedR16) {
  SKIP_UNLESS_R16(*fast_);
  const std::vector<int32_t> ids = {0, 15, 16, 31, 32, 36, 5};  // group edges and the tail (32..36)
  for (DType dt : {DType::Q8_0, DType::Q4_0})
    for (int64_t cols : {32, 96, 4096 + 32}) {
      const Tensor plain = convert(random(37, cols), dt), table = interleaved(plain, store_);
      const Tensor got = zeros(DType::F32, 7, cols), want = zeros(DType::F32, 7, cols);
      fast_->embed(got, table, ids);
      ref_->embed(want, plain, ids);
      expect_close(got, want, 0, 0, std::string(dtype_name(table.dtype)) + " embed cols " + std::to_string(cols));
    }
}

// Every row of an R16 layout reads back as the plain row it came from, block for block; a view of
// the rows from a group on is again R16; views that cut a group, or columns, are refused.
TEST(Quant, R16LayoutKeepsEveryRow) {
  const int64_t rows = 37, K = 96;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  std::vector<float> x(static_cast<size_t>(K)), want(static_cast<size_t>(K)), got(static_cast<size_t>(K));
  for (DType dt : {DType::Q8_0, DType::Q4_0}) {
    const DType r16 = interleaved_of(dt);
    EXPECT_EQ(plain_of(r16), dt);
    OwnedTensor plain = OwnedTensor::zeros(dt, {rows, K}), w = OwnedTensor::zeros(r16, {rows, K});
    for (int64_t r = 0; r < rows; ++r) {
      for (float& v : x) v = u(rng);
      convert_row_from_f32(dt, x.data(), plain.view.row(r), K);
    }
    interleave_rows(dt, plain.view.data, w.view.data, rows, K);
    EXPECT_NE(std::memcmp(plain.view.data, w.view.data, plain.view.nbytes()), 0);
    std::vector<uint8_t> blocks(dtype_bytes(dt, K));
    for (int64_t r = 0; r < rows; ++r) {
      blocks_of_row(r16, w.view.data, rows, K, r, 0, K / 32, blocks.data());
      EXPECT_EQ(std::memcmp(blocks.data(), plain.view.row(r), blocks.size()), 0) << dtype_name(r16) << " row " << r;
      ref::weight_row_f32(plain.view, r, want.data());
      dequantize_row_r16(r16, w.view.data, rows, K, r, got.data());
      EXPECT_EQ(got, want) << dtype_name(r16) << " row " << r;
    }
    const Tensor tail = w.view.rows_view(16, 21);  // one group and the 5 plain rows
    dequantize_row_r16(r16, tail.data, tail.rows(), K, 20, got.data());
    ref::weight_row_f32(plain.view, 36, want.data());
    EXPECT_EQ(got, want);
    EXPECT_THROW(w.view.rows_view(8, 16), std::invalid_argument);
    EXPECT_THROW(w.view.rows_view(0, 20), std::invalid_argument);
    EXPECT_THROW(w.view.cols_view(0, 64), std::invalid_argument);
    EXPECT_FALSE(dtype_from_name(dtype_name(r16)));  // a memory layout, never a file's dtype
    EXPECT_EQ(dtype_bytes(r16, K), dtype_bytes(dt, K));
  }
}

// Round trips: each value comes back within the rounding of its block, i.e. half a step of
// d = amax/127 (Q8_0) or one step of d = amax/8 (Q4_0: +max maps to -8 * d... and -max to
// 8 * d, clamped to 7 * d), plus the F16 rounding of d (2^-11 relative, times up to 127 or 8).
TEST(Quant, RoundTripBounds) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  const int64_t n = 32 * 64;
  std::vector<float> x(static_cast<size_t>(n)), back(static_cast<size_t>(n));
  for (float& v : x) v = u(rng);
  for (int i = 0; i < 32; ++i) x[static_cast<size_t>(32 + i)] = 0.0f;  // an all-zero block: d = 0
  std::vector<uint8_t> q8(dtype_bytes(DType::Q8_0, n)), q4(dtype_bytes(DType::Q4_0, n));
  quantize_row_q8_0(x.data(), q8.data(), n);
  dequantize_row_q8_0(q8.data(), back.data(), n);
  for (int64_t b = 0; b < n / 32; ++b) {
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::abs(x[static_cast<size_t>(b * 32 + i)]));
    for (int i = 0; i < 32; ++i) {
      const size_t j = static_cast<size_t>(b * 32 + i);
      ASSERT_LE(std::abs(back[j] - x[j]), amax * (0.5f / 127.0f + 1.0f / 2048.0f) + 1e-7f) << "Q8_0 " << j;
    }
  }
  quantize_row_q4_0(x.data(), q4.data(), n);
  dequantize_row_q4_0(q4.data(), back.data(), n);
  for (int64_t b = 0; b < n / 32; ++b) {
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::abs(x[static_cast<size_t>(b * 32 + i)]));
    for (int i = 0; i < 32; ++i) {
      const size_t j = static_cast<size_t>(b * 32 + i);
      ASSERT_LE(std::abs(back[j] - x[j]), amax * (1.0f / 8.0f + 8.0f / 2048.0f) + 1e-7f) << "Q4_0 " << j;
    }
  }
  for (int i = 0; i < 32; ++i) EXPECT_EQ(back[static_cast<size_t>(32 + i)], 0.0f);
}

// The FMA probe of bench (measure_fma_flops) does the work it counts: kFmaChains chains of
// `iters` FMAs per lane, every lane of a chain alike; its sum matches the scalar recurrence.
TEST_P(Ops, FmaLoopCountsItsWork) {
#ifdef PURELLM_TEST_DEVICE
  GTEST_SKIP() << "a CPU kernel table only";
#endif
  const cpu::Kernels* k = cpu::kernels_for(GetParam());
  if (!k) GTEST_SKIP() << "no kernel table for " << cpu::isa_name(GetParam());
  const int64_t iters = 1001, lanes = k->nr / 2, chains = cpu::kFmaChains;
  float sink = 0;
  EXPECT_EQ(k->fma_loop(iters, &sink), 2.0 * static_cast<double>(chains * lanes * iters));
  double want = 0;
  for (int c = 0; c < chains; ++c) {
    float acc = 0.001f * static_cast<float>(c);
    for (int64_t i = 0; i < iters; ++i) acc = std::fma(acc, 0.999f, 0.001f);
    want += static_cast<double>(lanes) * acc;
  }
  EXPECT_NEAR(sink, want, 1e-4 * want);  // (SSE2 multiplies and adds unfused; one step fewer: 5e-4)
}

// The bandwidth probe's sum (four streams, then the tail) adds every value once, on odd sizes.
TEST_P(Ops, SumReadsEveryValue) {
#ifdef PURELLM_TEST_DEVICE
  GTEST_SKIP() << "a CPU kernel table only";
#endif
  const cpu::Kernels* k = cpu::kernels_for(GetParam());
  if (!k) GTEST_SKIP() << "no kernel table for " << cpu::isa_name(GetParam());
  for (int64_t n : {0, 1, 7, 63, 64, 65, 257, 1000, 4099}) {
    std::vector<float> x(static_cast<size_t>(n));
    double want = 0;
    for (int64_t i = 0; i < n; ++i) want += x[static_cast<size_t>(i)] = static_cast<float>(i % 17 + 1);
    EXPECT_EQ(k->sum(x.data(), n), static_cast<float>(want)) << "n = " << n;  // small integers: exact
  }
}

// The GGUF layouts, on a block whose answer is known: x[i] = i - 8 for Q4_0 (max magnitude 23
// at i = 31, d = 23 / -8) and x[i] = i - 16 for Q8_0 (amax 16 at i = 0, d = 16 / 127).
TEST(Quant, GgufBlockLayout) {
  float x[32];
  for (int i = 0; i < 32; ++i) x[i] = static_cast<float>(i - 16);
  BlockQ8_0 b8;
  quantize_row_q8_0(x, &b8, 32);
  EXPECT_EQ(b8.d, f32_to_f16(16.0f / 127.0f));
  EXPECT_EQ(b8.q[0], -127);
  EXPECT_EQ(b8.q[16], 0);
  EXPECT_EQ(b8.q[24], static_cast<int8_t>(std::roundf(8.0f * (1.0f / (16.0f / 127.0f)))));
  for (int i = 0; i < 32; ++i) x[i] = static_cast<float>(i - 8);
  BlockQ4_0 b4;
  quantize_row_q4_0(x, &b4, 32);
  const float d = 23.0f / -8.0f;
  EXPECT_EQ(b4.d, f32_to_f16(d));
  EXPECT_EQ(b4.q[15] >> 4, 0);       // element 31 (the maximum) is -8 * d: nibble 0, high half
  EXPECT_EQ(b4.q[8] & 0x0f, 8);      // element 8 is 0: nibble 8, low half
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(b4.q[j] & 0x0f, std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * (1.0f / d) + 8.5f)))) << j;
    EXPECT_EQ(b4.q[j] >> 4, std::min(15, static_cast<int>(static_cast<int8_t>(x[j + 16] * (1.0f / d) + 8.5f)))) << j;
  }
}

// The weight quantizer rounds as ggml's reference (std::roundf: halfway cases away from zero).
// Block 0 has amax 127 (d = 1), so its halves are exact ties and its neighbours of halves
// nearly so; the other blocks are random, over several magnitudes.
TEST(Quant, WeightQuantizerRoundsHalfAwayFromZero) {
  const int64_t n = 32 * 64;
  std::vector<float> x(static_cast<size_t>(n), 0.0f);
  const float ties[] = {127.0f, 0.5f, -0.5f, 1.5f, -1.5f, 2.5f, -2.5f, 126.5f, -126.5f, -127.0f,
                        std::nextafter(0.5f, 0.0f), std::nextafter(-0.5f, 0.0f),
                        std::nextafter(2.5f, 3.0f), std::nextafter(-2.5f, -3.0f),
                        std::nextafter(126.5f, 0.0f), 1e-30f, -1e-30f};
  std::copy(std::begin(ties), std::end(ties), x.begin());
  std::mt19937 rng(11);
  for (int64_t b = 1; b < n / 32; ++b) {
    const float scale = std::ldexp(1.0f, static_cast<int>(b % 24) - 12);  // 2^-12 .. 2^11
    std::uniform_real_distribution<float> u(-scale, scale);
    for (int i = 0; i < 32; ++i) x[static_cast<size_t>(b * 32 + i)] = u(rng);
  }
  std::vector<BlockQ8_0> q(static_cast<size_t>(n / 32));
  quantize_row_q8_0(x.data(), q.data(), n);
  for (int64_t b = 0; b < n / 32; ++b) {
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[static_cast<size_t>(b * 32 + i)]));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    ASSERT_EQ(q[static_cast<size_t>(b)].d, f32_to_f16(d)) << "block " << b;
    for (int i = 0; i < 32; ++i)
      ASSERT_EQ(q[static_cast<size_t>(b)].q[i],
                static_cast<int8_t>(std::roundf(x[static_cast<size_t>(b * 32 + i)] * id)))
          << "block " << b << " value " << i;
  }
  EXPECT_EQ(q[0].q[5], 3);   // 2.5 -> 3
  EXPECT_EQ(q[0].q[6], -3);  // -2.5 -> -3
  EXPECT_EQ(q[0].q[10], 0);  // just under 0.5 -> 0
}

// The activation quantizer: d = amax / 127 and q = x / d rounded half to even, as
// std::nearbyint rounds. Block 0 has amax 127 (d = 1), so its halves are exact ties; blocks 1
// and 2 are random (block 2 all zero: d = 0, q = 0); s is the sum of each block's q.
TEST(Quant, ActivationQuantizerRoundsHalfToEven) {
  const int64_t K = 96;
  std::vector<float> x(K, 0.0f);
  const float ties[] = {127.0f, 2.5f, 3.5f, -2.5f, -3.5f, 0.5f, -0.5f, 1.5f, -126.5f, 126.5f};
  std::copy(std::begin(ties), std::end(ties), x.begin());
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  for (int64_t i = 32; i < 64; ++i) x[static_cast<size_t>(i)] = u(rng);
  std::vector<uint8_t> mem(QuantizedActs::bytes_for(2, K) + 64);
  QuantizedActs a = QuantizedActs::carve(mem.data() + (64 - reinterpret_cast<uintptr_t>(mem.data()) % 64) % 64, 2, K);
  quantize_acts_row(x.data(), a, 1);
  for (int64_t b = 0; b < K / 32; ++b) {
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[static_cast<size_t>(b * 32 + i)]));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    EXPECT_EQ(a.d_row(1)[b], d) << "block " << b;
    int32_t sum = 0;
    for (int i = 0; i < 32; ++i) {
      const auto want = static_cast<int>(std::nearbyint(x[static_cast<size_t>(b * 32 + i)] * id));
      EXPECT_EQ(a.q_row(1)[b * 32 + i], want) << "block " << b << " value " << i;
      sum += want;
    }
    EXPECT_EQ(a.s_row(1)[b], sum) << "block " << b;
  }
  EXPECT_EQ(a.q_row(1)[1], 2);     // 2.5 -> 2
  EXPECT_EQ(a.q_row(1)[2], 4);     // 3.5 -> 4
  EXPECT_EQ(a.q_row(1)[8], -126);  // -126.5 -> -126
}

// ---- errors -----------------------------------------------------------------------------------

TEST_P(Ops, BadShapesThrow) {
  const Tensor x = random(2, 8), w = random(5, 7), out = zeros(DType::F32, 2, 5);
  EXPECT_THROW(fast_->matmul(out, x, w, Tensor{}), std::invalid_argument);
  EXPECT_THROW(fast_->add(out, x, x), std::invalid_argument);
  const std::vector<int32_t> ids = {7};
  EXPECT_THROW(fast_->embed(zeros(DType::F32, 1, 7), w, ids), std::invalid_argument);
  AttentionArgs a;
  a.n_heads = 3;
  a.n_kv_heads = 2;
  a.head_dim = 4;
  EXPECT_THROW(fast_->attention(zeros(DType::F32, 1, 12), random(1, 12), random(4, 8), random(4, 8), a),
               std::invalid_argument);
  try {
    fast_->matmul(out, x, w, Tensor{});
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("matmul"), std::string::npos) << e.what();
  }
}

TEST_P(Ops, NameSaysIsa) {
#ifdef PURELLM_TEST_DEVICE
  EXPECT_EQ(fast_->name().rfind("cuda (", 0), 0u) << fast_->name();
#else
  EXPECT_EQ(fast_->name(), "cpu (" + std::string(cpu::isa_name(GetParam())) + ")");
#endif
}

}  // namespace

#ifndef PURELLM_TEST_DEVICE
// On ARM64 the NEON kernels are built in and chosen by default. (The Ops tests skip an ISA that
// is not compiled in, so a lost NEON build would otherwise pass unnoticed.)
TEST(Dispatch, NeonIsCompiledAndChosenOnArm64) {
#if defined(__aarch64__)
  if (const char* forced = std::getenv("PURELLM_ISA"); forced && *forced) GTEST_SKIP() << "PURELLM_ISA is set";
  EXPECT_TRUE(cpu::isa_available(Isa::NEON));
  EXPECT_EQ(cpu::default_isa(), Isa::NEON);
#else
  GTEST_SKIP() << "not an ARM64 build";
#endif
}

// The WorkQueue hands out every index exactly once, in ranges aligned as asked, whatever the
// team size, and gives a thread that takes longer fewer indices.
TEST(WorkQueue, CoversEveryIndexOnceAndFeedsTheFasterThread) {
  for (int64_t n : {0, 1, 15, 16, 17, 768, 1000, 50257})
    for (int64_t align : {1, 16, 32})
      for (int threads : {1, 2, 3}) {
        std::vector<std::atomic<int>> seen(static_cast<size_t>(n));
        cpu::WorkQueue queue(n, align);
        std::atomic<bool> misaligned{false};
#pragma omp parallel num_threads(threads)
        queue.for_each([&](cpu::Range r) {
          if (r.begin % align != 0 || r.begin >= r.end) misaligned = true;
          for (int64_t i = r.begin; i < r.end; ++i) seen[static_cast<size_t>(i)]++;
        });
        const std::string where = "n " + std::to_string(n) + " align " + std::to_string(align);
        EXPECT_FALSE(misaligned) << where;
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[static_cast<size_t>(i)].load(), 1) << where << " index " << i;
      }
  const int64_t n = 3200;
  cpu::WorkQueue queue(n, 16);
  int64_t done[2] = {0, 0};
  int team = 0;
#pragma omp parallel num_threads(2)
  {
    if (omp_get_thread_num() == 0) team = omp_get_num_threads();
    queue.for_each([&](cpu::Range r) {
      if (omp_get_thread_num() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the slow core
      done[omp_get_thread_num()] += r.end - r.begin;
    });
  }
  if (team == 2) {
    EXPECT_GT(done[1], done[0]) << "thread 1 took " << done[1] << " of " << n;
  }
  EXPECT_EQ(done[0] + done[1], n);
}

// SpeedSplit's plan cuts [0, n) into contiguous parts with aligned inner boundaries, whatever
// it has measured; after regions where thread 0 took twice as long per index, thread 0 gets
// about a third; a thread with no work or no time measured changes nothing.
TEST(SpeedSplit, PartsCoverEverythingAndFollowTheMeasuredSpeeds) {
  const auto check_plan = [](const cpu::SpeedSplit& speeds, const std::string& when) {
    for (int64_t n : {0, 1, 15, 16, 17, 768, 1000, 50257})
      for (int64_t align : {1, 16, 32})
        for (int parts : {1, 2, 3, 7}) {
          int64_t bounds[8];
          speeds.plan(n, parts, align, bounds);
          const std::string where = when + ": n " + std::to_string(n) + " align " + std::to_string(align) +
                                    " parts " + std::to_string(parts);
          EXPECT_EQ(bounds[0], 0) << where;
          EXPECT_EQ(bounds[parts], n) << where;
          for (int t = 0; t < parts; ++t) {
            EXPECT_LE(bounds[t], bounds[t + 1]) << where;
            if (t > 0 && bounds[t] < n) {
              EXPECT_EQ(bounds[t] % align, 0) << where;
            }
          }
        }
  };
  cpu::SpeedSplit speeds;
  check_plan(speeds, "unmeasured");
  int64_t bounds[3];
  speeds.plan(3200, 2, 16, bounds);
  EXPECT_EQ(bounds[1], 1600);  // nothing measured yet: equal parts
  for (int region = 0; region < 40; ++region) {
    speeds.plan(3200, 2, 16, bounds);
    const double seconds[2] = {2e-6 * static_cast<double>(bounds[1]), 1e-6 * static_cast<double>(bounds[2] - bounds[1])};
    speeds.measured(2, bounds, seconds);
  }
  speeds.plan(3200, 2, 16, bounds);
  EXPECT_NEAR(static_cast<double>(bounds[1]), 3200.0 / 3.0, 48.0);
  check_plan(speeds, "measured");
  const int64_t idle[3] = {0, 0, 3200};  // thread 0 had nothing to do
  const double seconds[2] = {0.0, 1e-3};
  speeds.measured(2, idle, seconds);
  int64_t after[3];
  speeds.plan(3200, 2, 16, after);
  EXPECT_EQ(after[1], bounds[1]);
}
#endif
