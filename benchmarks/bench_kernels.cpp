// CPU kernel benchmarks, measured against the machine's limits.
//
//   bench_kernels --benchmark_filter=summary   # ~10 s: bandwidth, one GEMV, one GEMM
//   bench_kernels                              # everything (minutes)
//   PURELLM_ISA=sse2 OMP_NUM_THREADS=1 bench_kernels --benchmark_filter=T1/
// Counters: GB (per second) of weights or operands read, GFLOP (per second), pct_bw.
// On a machine shared with other busy processes, run with OMP_WAIT_POLICY=passive: libgomp's
// default spin-wait keeps a core busy while our other thread waits for one, and a threaded op
// then takes a scheduler time slice (~4-8 ms) instead of microseconds.
//
// Decode (GEMV) is bound by reading the weights from DRAM, so every GEMV benchmark rotates
// through enough copies of its weight matrix (>= 256 MiB) that none is in the cache, and
// reports GB/s of weights read and pct_bw, its share of the read bandwidth that the probe
// (a read-only SIMD sum over 1 GiB on all threads) measures just before it. Prefill (GEMM) is bound by arithmetic:
// GFLOP/s, beside OpenBLAS's sgemm on the same shape when Debian's OpenBLAS was found.
// Shapes are GPT-2 124M's and TinyLlama 1.1B's linear layers, named N x K for W: [N, K].
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "tensor/cpu/bandwidth.hpp"
#include "tensor/cpu/cpu_backend.hpp"
#include "tensor/cpu/kernels.hpp"
#include "tensor/quant.hpp"
#include "tensor/tensor.hpp"

#ifdef PURELLM_HAVE_OPENBLAS
#include <cblas.h>
#endif

using namespace purellm;

namespace {

constexpr size_t kProbeBytes = size_t{1} << 30;   // bandwidth probe: 1 GiB
constexpr size_t kColdBytes = size_t{256} << 20;  // GEMV weights rotated: 8x a 32 MiB L3

int g_threads = 1;  // OpenMP threads at start-up (OMP_NUM_THREADS or all cores)

// ---- data -------------------------------------------------------------------------------------

// Deterministic values in [-0.5, 0.5) without a slow generator (filling GiBs takes time).
float pattern(uint64_t i) { return static_cast<float>((i * 2654435761u >> 8) & 0xffff) / 65536.0f - 0.5f; }

struct Matrix {
  AlignedBuffer buf;
  Tensor view;
};

Matrix make_matrix(DType dtype, int64_t rows, int64_t cols, uint64_t seed) {
  Matrix m;
  m.view = Tensor::contiguous(nullptr, dtype, {rows, cols});
  m.buf = AlignedBuffer(m.view.nbytes(), /*huge_pages=*/true);
  m.view.data = m.buf.data();
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) row[static_cast<size_t>(c)] = pattern(static_cast<uint64_t>(r * cols + c) + seed * 7919);
    convert_row_from_f32(dtype, row.data(), m.view.row(r), cols);  // F32, F16, BF16, Q8_0, Q4_0
  }
  return m;
}

// Enough copies of an [N, K] weight that cycling through them always reads from DRAM.
std::vector<Matrix> cold_copies(DType dtype, int64_t N, int64_t K) {
  const size_t bytes = dtype_bytes(dtype, N * K);
  const size_t copies = std::max<size_t>(2, (kColdBytes + bytes - 1) / bytes);
  std::vector<Matrix> ws;
  for (size_t i = 0; i < copies; ++i) ws.push_back(make_matrix(dtype, N, K, i));
  return ws;
}

std::string lower(std::string_view s) {
  std::string r(s);
  for (char& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

// ---- machine limits ---------------------------------------------------------------------------

// The probe (tensor/cpu/bandwidth.hpp): a read-only SIMD sum over 1 GiB on all threads.
using Probe = cpu::BandwidthProbe;

Probe& probe() {
  static Probe p(kProbeBytes);
  return p;
}

// The read bandwidth of all threads now (bytes/s): the best of three probe passes. GEMV
// benchmarks measure it right before their timed loop, because on a shared host it drifts
// with the neighbours' load from one minute to the next.
double bandwidth_now() {
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const double t0 = omp_get_wtime();
    benchmark::DoNotOptimize(probe().sum(g_threads));
    best = std::max(best, static_cast<double>(kProbeBytes) / (omp_get_wtime() - t0));
  }
  return best;
}

void BM_bandwidth(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  probe().sum(threads);
  for (auto _ : state) benchmark::DoNotOptimize(probe().sum(threads));
  const double bytes = static_cast<double>(kProbeBytes) * static_cast<double>(state.iterations());
  state.counters["GB"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsRate);
}

// One OpenMP parallel region opened and closed on `threads` threads, with no work in it: what
// each op that takes threads pays (a GPT-2 decode step opens about 60), and what tells the
// OpenMP runtimes apart (see the top-level CMakeLists.txt).
void BM_parallel_region(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  for (auto _ : state) {
#pragma omp parallel num_threads(threads)
    benchmark::DoNotOptimize(omp_get_thread_num());
  }
}

// Counters shared by the matmul benchmarks: weight GB/s ("GB" per second), GFLOP/s and, for
// GEMV, pct_bw = weight bytes per second as a percentage of `limit` (bandwidth_now() taken
// before the loop, also reported as bw_GB/s); `seconds` is the wall time of the timed loop.
void matmul_counters(benchmark::State& state, int64_t T, int64_t N, int64_t K, size_t weight_bytes, double seconds,
                     double limit) {
  const double it = static_cast<double>(state.iterations()), bytes = it * static_cast<double>(weight_bytes);
  state.counters["GB"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsRate);
  state.counters["GFLOP"] = benchmark::Counter(it * 2.0 * static_cast<double>(T * N * K) / 1e9, benchmark::Counter::kIsRate);
  if (T == 1) {
    state.counters["pct_bw"] = bytes / seconds / limit * 100.0;
    state.counters["bw_GB/s"] = limit / 1e9;
  }
}

// ---- matmul -----------------------------------------------------------------------------------

struct Shape {
  const char* model;
  int64_t N, K;
};

const Shape kShapes[] = {
    {"gpt2", 768, 768},    {"gpt2", 2304, 768},   {"gpt2", 3072, 768},    {"gpt2", 768, 3072},
    {"gpt2", 50257, 768},  {"tinyllama", 2048, 2048}, {"tinyllama", 5632, 2048}, {"tinyllama", 2048, 5632},
};

// GEMV on cold weights (T == 1) or GEMM on one warm copy (T > 1), on `threads` threads.
void BM_matmul(benchmark::State& state, DType dtype, int64_t T, int64_t N, int64_t K, int threads) {
  cpu::set_num_threads(threads);
  Backend& be = cpu_backend();
  const std::vector<Matrix> ws = T == 1 ? cold_copies(dtype, N, K) : [&] {
    std::vector<Matrix> one;
    one.push_back(make_matrix(dtype, N, K, 0));
    return one;
  }();
  const Matrix x = make_matrix(DType::F32, T, K, 99), out = make_matrix(DType::F32, T, N, 0);
  const double limit = T == 1 ? bandwidth_now() : 0.0;
  size_t i = 0;
  const double t0 = omp_get_wtime();
  for (auto _ : state) {
    be.matmul(out.view, x.view, ws[i].view, Tensor{});
    i = (i + 1) % ws.size();
  }
  matmul_counters(state, T, N, K, ws[0].view.nbytes(), omp_get_wtime() - t0, limit);
  cpu::set_num_threads(g_threads);
}

#ifdef PURELLM_HAVE_OPENBLAS
// The same products with OpenBLAS (F32 only): sgemv on cold copies, sgemm on a warm one.
void BM_openblas(benchmark::State& state, int64_t T, int64_t N, int64_t K, int threads) {
  openblas_set_num_threads(threads);
  const std::vector<Matrix> ws = T == 1 ? cold_copies(DType::F32, N, K) : [&] {
    std::vector<Matrix> one;
    one.push_back(make_matrix(DType::F32, N, K, 0));
    return one;
  }();
  const Matrix x = make_matrix(DType::F32, T, K, 99), out = make_matrix(DType::F32, T, N, 0);
  const auto n = static_cast<int>(N), k = static_cast<int>(K), t = static_cast<int>(T);
  const double limit = T == 1 ? bandwidth_now() : 0.0;
  size_t i = 0;
  const double t0 = omp_get_wtime();
  for (auto _ : state) {
    const float* w = ws[i].view.ptr<float>();
    if (T == 1)
      cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, w, k, x.view.ptr<float>(), 1, 0.0f, out.view.ptr<float>(), 1);
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t, n, k, 1.0f, x.view.ptr<float>(), k, w, k, 0.0f,
                  out.view.ptr<float>(), n);
    i = (i + 1) % ws.size();
  }
  matmul_counters(state, T, N, K, ws[0].view.nbytes(), omp_get_wtime() - t0, limit);
  openblas_set_num_threads(g_threads);
}
#endif

// ---- row ops and attention --------------------------------------------------------------------

void BM_rmsnorm(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  const Matrix x = make_matrix(DType::F32, rows, cols, 1), w = make_matrix(DType::F32, 1, cols, 2);
  const Matrix out = make_matrix(DType::F32, rows, cols, 0);
  for (auto _ : state) cpu_backend().rmsnorm(out.view, x.view, w.view.reshape({cols}), 1e-5f);
  state.counters["GB"] = benchmark::Counter(static_cast<double>(state.iterations()) * 8.0 * rows * cols / 1e9,
                                            benchmark::Counter::kIsRate);
}

void BM_softmax(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  const Matrix x = make_matrix(DType::F32, rows, cols, 1), out = make_matrix(DType::F32, rows, cols, 0);
  for (auto _ : state) cpu_backend().softmax(out.view, x.view);
  state.counters["GB"] = benchmark::Counter(static_cast<double>(state.iterations()) * 8.0 * rows * cols / 1e9,
                                            benchmark::Counter::kIsRate);
}

// T queries at the end of a context of `context` positions (T == 1: one decode step).
void BM_attention(benchmark::State& state, int n_heads, int n_kv_heads, int64_t T, int64_t context) {
  const int head_dim = 64;
  const int64_t q_cols = int64_t{n_heads} * head_dim, kv_cols = int64_t{n_kv_heads} * head_dim;
  const Matrix q = make_matrix(DType::F32, T, q_cols, 1), out = make_matrix(DType::F32, T, q_cols, 0);
  const Matrix k = make_matrix(DType::F32, context, kv_cols, 2), v = make_matrix(DType::F32, context, kv_cols, 3);
  AttentionArgs a;
  a.n_heads = n_heads;
  a.n_kv_heads = n_kv_heads;
  a.head_dim = head_dim;
  a.pos0 = context - T;
  a.scale = 0.125f;
  for (auto _ : state) cpu_backend().attention(out.view, q.view, k.view, v.view, a);
  const double it = static_cast<double>(state.iterations());
  state.counters["GB"] = benchmark::Counter(it * 2.0 * 4.0 * context * kv_cols / 1e9, benchmark::Counter::kIsRate);
  // q.k and p.v: 2 * 2 * head_dim flops per (head, query, visible key); causal: ~half for T > 1.
  const double keys = T == 1 ? static_cast<double>(context) : (a.pos0 + 0.5 * static_cast<double>(T + 1)) * T;
  state.counters["GFLOP"] = benchmark::Counter(it * 4.0 * head_dim * n_heads * keys / 1e9, benchmark::Counter::kIsRate);
}

// ---- registration -----------------------------------------------------------------------------

std::string shape_name(int64_t T, int64_t N, int64_t K) {
  return std::string("T") + std::to_string(T) + "/N" + std::to_string(N) + "xK" + std::to_string(K);
}

void register_all() {
  const int all = g_threads;
  using benchmark::RegisterBenchmark;

  // Summary: the machine's limit, one decode GEMV and one prefill GEMM, each against it.
  RegisterBenchmark("summary/bandwidth_1GiB", BM_bandwidth)->Arg(all)->ArgName("threads")->UseRealTime()->MinTime(0.3);
  RegisterBenchmark("summary/gemv_f32_cold/T1/N3072xK768", BM_matmul, DType::F32, 1, 3072, 768, all)
      ->UseRealTime()->MinTime(0.5);
  for (DType dt : {DType::F32, DType::BF16, DType::Q8_0, DType::Q4_0})
    RegisterBenchmark(("summary/gemv_" + lower(dtype_name(dt)) + "_cold/T1/N2048xK5632").c_str(), BM_matmul, dt, 1,
                      2048, 5632, all)->UseRealTime()->MinTime(0.5);
  RegisterBenchmark("summary/gemm_q8_0/T512/N3072xK768", BM_matmul, DType::Q8_0, 512, 3072, 768, all)
      ->UseRealTime()->MinTime(0.5);
#ifdef PURELLM_HAVE_OPENBLAS
  RegisterBenchmark("summary/openblas_sgemm/T512/N3072xK768", BM_openblas, 512, 3072, 768, all)
      ->UseRealTime()->MinTime(0.5);
#endif
  RegisterBenchmark("summary/gemm_f32/T512/N3072xK768", BM_matmul, DType::F32, 512, 3072, 768, all)
      ->UseRealTime()->MinTime(0.5);

  RegisterBenchmark("bandwidth_1GiB", BM_bandwidth)->Arg(1)->Arg(all)->ArgName("threads")->UseRealTime();
  RegisterBenchmark("parallel_region", BM_parallel_region)->Arg(all)->ArgName("threads")->UseRealTime();

  for (const Shape& s : kShapes)
    for (int64_t T : {1, 128, 512}) {
      for (DType dt : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0}) {
        const std::string name = std::string(s.model) + "/" + lower(dtype_name(dt)) + "/" + shape_name(T, s.N, s.K);
        RegisterBenchmark(("matmul/" + name).c_str(), BM_matmul, dt, T, s.N, s.K, all)->UseRealTime();
        if (T == 1 && dt == DType::F32 && all > 1)  // decode on one thread: threads must pay off
          RegisterBenchmark(("matmul/" + name + "/threads:1").c_str(), BM_matmul, dt, T, s.N, s.K, 1)->UseRealTime();
      }
#ifdef PURELLM_HAVE_OPENBLAS
      RegisterBenchmark((std::string("openblas/") + s.model + "/f32/" + shape_name(T, s.N, s.K)).c_str(), BM_openblas,
                        T, s.N, s.K, all)->UseRealTime();
#endif
    }

  RegisterBenchmark("rmsnorm", BM_rmsnorm)->Args({1, 2048})->Args({512, 2048})->UseRealTime();
  RegisterBenchmark("softmax", BM_softmax)->Args({12, 1024})->Args({1, 50257})->UseRealTime();
  for (int64_t ctx : {256, 1024}) {
    const std::string c = std::string("/ctx") + std::to_string(ctx);
    RegisterBenchmark(("attention/gpt2_mha12/decode" + c).c_str(), BM_attention, 12, 12, 1, ctx)->UseRealTime();
    RegisterBenchmark(("attention/tinyllama_gqa32x4/decode" + c).c_str(), BM_attention, 32, 4, 1, ctx)->UseRealTime();
    RegisterBenchmark(("attention/gpt2_mha12/prefill" + c).c_str(), BM_attention, 12, 12, ctx, ctx)->UseRealTime();
  }
}

}  // namespace

int main(int argc, char** argv) {
  g_threads = omp_get_max_threads();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  try {
    cpu_backend();  // PURELLM_ISA may name a set this binary or CPU lacks
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_kernels: %s\n", e.what());
    return 1;
  }
  benchmark::AddCustomContext("purellm_backend", cpu_backend().name());
  benchmark::AddCustomContext("purellm_threads", std::to_string(omp_get_max_threads()));
#ifdef PURELLM_HAVE_OPENBLAS
  benchmark::AddCustomContext("openblas", "yes");
#else
  benchmark::AddCustomContext("openblas", "not found at build time");
#endif
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
