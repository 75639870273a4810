// The CPU backend's fast ops: shape checks (shared with the reference), OpenMP threading and
// blocking around the single-threaded SIMD kernels of one Kernels table.
//
// Threads split outputs into large contiguous blocks (rows of the output, heads, channels),
// and only when the op is big enough to pay for waking them. Working memory comes from a
// Scratch owned by the backend, so no op allocates once it has seen its largest shape.
#pragma once

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <span>
#include <vector>

#include "tensor/backend.hpp"
#include "tensor/cpu/kernels.hpp"

namespace purellm::cpu {

// Per-thread working memory, grown (never shrunk) before a parallel region.
// Not thread-safe: one backend serves one caller thread at a time.
class Scratch {
 public:
  // Makes thread(t) hold at least n floats for every t < threads.
  void reserve(int threads, size_t n);
  float* thread(int t) const { return bufs_[static_cast<size_t>(t)].as<float>(); }
  // One buffer of at least n floats for the serial part of an op (distinct from thread()).
  float* shared(size_t n);

 private:
  std::vector<AlignedBuffer> bufs_;
  size_t per_thread_ = 0;
  AlignedBuffer shared_;
};

// Below this many (rough) multiply-adds or bytes moved, an op runs on the calling thread:
// waking the OpenMP team costs microseconds.
constexpr int64_t kMinParallelWork = int64_t{1} << 15;

inline int threads_for(int64_t work) { return work < kMinParallelWork ? 1 : omp_get_max_threads(); }

// The part `index` of `parts` near-equal contiguous pieces of [0, n), with inner boundaries
// rounded to multiples of `align` (keeps threads off each other's cache lines).
struct Range {
  int64_t begin, end;
};
inline Range split(int64_t n, int parts, int index, int64_t align = 1) {
  const int64_t blocks = (n + align - 1) / align;
  const int64_t b0 = blocks * index / parts, b1 = blocks * (index + 1) / parts;
  return {std::min(n, b0 * align), std::min(n, b1 * align)};
}

// [0, n) shared out among the threads of one parallel region so that a slower thread takes
// less: on a shared host one core often reads 30% slower than the other for a whole run, and a
// static split leaves the faster one waiting (GPT-2 F32 decode: 2.3 of 9.6 ms per token). The
// GEMM's columns and the bandwidth probe use it (one long pass each). Each thread
// first takes its static part of the first three quarters (long sequential runs, boundaries
// multiples of `align`), then the last quarter goes in chunks of n / 32 to whichever thread
// asks first. Make one before the region; every thread of it calls for_each once.
class WorkQueue {
 public:
  WorkQueue(int64_t n, int64_t align)
      : n_(n), align_(align), static_end_(std::min(n, n * 3 / 4 / align * align)),
        chunk_(std::max<int64_t>(1, (n / 32 + align - 1) / align) * align), next_(static_end_) {}

  // f(Range) for this thread's static part, then for chunks until none are left.
  template <class F>
  void for_each(F f) {
    const Range r = split(static_end_, omp_get_num_threads(), omp_get_thread_num(), align_);
    if (r.end > r.begin) f(r);
    for (;;) {
      const int64_t b = next_.fetch_add(chunk_, std::memory_order_relaxed);
      if (b >= n_) return;
      f(Range{b, std::min(n_, b + chunk_)});
    }
  }

 private:
  int64_t n_, align_, static_end_, chunk_;
  std::atomic<int64_t> next_;
};

// Static parts of [0, n) sized by how fast each thread has lately been, for the decode matrix
// products, where a WorkQueue's chunks cost more than the balance they buy (small matrices, ~50
// per token). Each thread times its part, and the next region's parts follow the threads'
// speeds relative to each other (a running average over regions, so one table serves all of a
// call site's shapes). GPT-2 decode, four runs of each in turn: F16 197-206 -> 206-215 tok/s
// against a WorkQueue, Q8_0 409-452 -> 428-466 against equal parts. Each output is still
// computed whole by one thread, so results do not depend on the split.
class SpeedSplit {
 public:
  static constexpr int kMaxThreads = 256;

  // Cuts [0, n) into `parts` (<= kMaxThreads) parts before a region: part t is [bounds[t],
  // bounds[t + 1]), inner boundaries multiples of `align`. bounds holds parts + 1 values.
  void plan(int64_t n, int parts, int64_t align, int64_t* bounds) const;
  // After the region: thread t took seconds[t] for its part of the plan.
  void measured(int parts, const int64_t* bounds, const double* seconds);

 private:
  std::atomic<float> speed_[kMaxThreads] = {};  // 0 until measured: counts as 1
};

// f(Range) for each thread's SpeedSplit part of [0, n), on nt threads (at most
// SpeedSplit::kMaxThreads); the threads' times then go back into `speeds`. One thread: f on
// all of it here, without a region (as parallel_for).
template <class F>
void parallel_parts(SpeedSplit& speeds, int64_t n, int nt, int64_t align, F f) {
  if (nt <= 1) {
    if (n > 0) f(Range{0, n});
    return;
  }
  nt = std::min(nt, SpeedSplit::kMaxThreads);
  int64_t bounds[SpeedSplit::kMaxThreads + 1];
  double seconds[SpeedSplit::kMaxThreads];
  speeds.plan(n, nt, align, bounds);
  int team = nt;
#pragma omp parallel num_threads(nt)
  {
    const int id = omp_get_thread_num(), got = omp_get_num_threads();
    if (id == 0) team = got;
    const Range r = got == nt ? Range{bounds[id], bounds[id + 1]} : split(n, got, id, align);
    const double start = omp_get_wtime();
    if (r.end > r.begin) f(r);
    seconds[id] = omp_get_wtime() - start;
  }
  if (team == nt) speeds.measured(nt, bounds, seconds);
}

// f(i) for i in [0, n), statically split over threads_for(work) threads; f may call
// omp_get_thread_num() to pick its scratch.
template <class F>
void parallel_for(int64_t n, int64_t work, F f) {
  const int nt = static_cast<int>(std::min<int64_t>(threads_for(work), n));
  if (nt <= 1) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) f(i);
}

// ---- ops (same contracts as Backend; see backend.hpp) ---------------------------------------
namespace fast {

void embed(const Kernels& k, const Tensor& out, const Tensor& table, std::span<const int32_t> ids);
void matmul(const Kernels& k, Scratch& s, const Tensor& out, const Tensor& x, const Tensor& w,
            const Tensor& bias);
void add(const Kernels& k, const Tensor& out, const Tensor& a, const Tensor& b);
void mul(const Kernels& k, const Tensor& out, const Tensor& a, const Tensor& b);
void scale(const Kernels& k, const Tensor& out, const Tensor& x, float s);
void add_scaled(const Kernels& k, const Tensor& out, const Tensor& x, float s);
void copy(const Kernels& k, const Tensor& out, const Tensor& x);
void layernorm(const Kernels& k, const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b,
               float eps);
void rmsnorm(const Kernels& k, const Tensor& out, const Tensor& x, const Tensor& w, float eps);
void softmax(const Kernels& k, const Tensor& out, const Tensor& x);
void gelu(const Kernels& k, const Tensor& out, const Tensor& x);
void gelu_tanh(const Kernels& k, const Tensor& out, const Tensor& x);
void relu(const Kernels& k, const Tensor& out, const Tensor& x);
void silu(const Kernels& k, const Tensor& out, const Tensor& x);
void silu_mul(const Kernels& k, const Tensor& out, const Tensor& gate, const Tensor& up);
void rope(const Kernels& k, const Tensor& x, int n_heads, int head_dim, int rot_dims, int64_t pos0,
          const Tensor& cos, const Tensor& sin);
void attention(const Kernels& k, Scratch& s, const Tensor& out, const Tensor& q, const Tensor& k_cache,
               const Tensor& v_cache, const AttentionArgs& args);
int64_t argmax(const Kernels& k, const Tensor& x);
void conv1d_causal(const Kernels& k, Scratch& s, const Tensor& out, const Tensor& x, const Tensor& w,
                   const Tensor& bias, const Tensor& state);
void ssm_scan(const Kernels& k, const Tensor& y, const Tensor& x, const Tensor& dt, const Tensor& B,
              const Tensor& C, const Tensor& A_log, const Tensor& D, const Tensor& dt_bias,
              const Tensor& state, const SsmArgs& args);

}  // namespace fast
}  // namespace purellm::cpu
