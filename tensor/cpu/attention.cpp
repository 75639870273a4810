// Attention over the KV cache on the CPU, by one of two roads.
//
// Few queries (decode, short prompts): one kernel call per (query, block of query heads that
// share a KV head), threads over those calls. Each call reads its keys and values once for all
// its heads (GQA/MQA), and only [heads x (pos0 + T)] scores per thread exist at a time.
//
// Many queries (prefill): every key and value serves many queries, so attention becomes two
// matrix products, scores = Q K^T and out = P V, run on the GEMM tile kernel (see matmul.cpp)
// with FlashAttention's online softmax between them (Dao et al., 2022). A work item is the
// query heads of one KV head over a chunk of queries. It walks the keys they see in blocks:
//   pack the block's keys (nr keys interleaved over d) and values (nr columns interleaved over keys)
//   for each query head, for each panel of mr queries:
//     S = (scale q) K^T        mr x block scores, one tile per nr keys, d deep
//     mask; online softmax per row: a running max and sum; the row's output rescaled as the max grows
//     out += P V               one tile per nr columns, block deep
// and at the end divides each output row by its sum. Per thread that is one block of keys and
// values, mr x kKeyBlock scores and the item's queries and outputs: never T x T scores.
#include <algorithm>
#include <limits>

#include "tensor/cpu/ops.hpp"
#include "tensor/cpu/reference.hpp"

namespace purellm::cpu::fast {
namespace {

constexpr int kMaxHeadsPerCall = 8;   // bounds the scores scratch of the row road
constexpr int64_t kTiledQueries = 16; // from this many queries on, the tiled road
constexpr int64_t kKeyBlock = 256;    // keys per block: packed keys and values 64 KiB each at d = 64
constexpr int64_t kItemRows = 72;     // query rows (queries x heads of the group) per work item

// Query heads per kernel call: the whole group up to kMaxHeadsPerCall, halved while that would
// leave threads without a call (MQA decode: one KV head, many query heads).
int heads_per_call(int group, int64_t kv_rows, int threads) {
  int h = std::min(group, kMaxHeadsPerCall);
  while (h > 1 && kv_rows * ((group + h - 1) / h) < threads) h = (h + 1) / 2;
  return h;
}

// The first key the query at position pos sees (a sliding window hides the older ones).
int64_t first_key(const AttentionArgs& a, int64_t pos) {
  return a.window > 0 ? std::max<int64_t>(0, pos - a.window + 1) : 0;
}

// Multiply-adds of one call, which decide how many threads it takes.
int64_t attention_work(const AttentionArgs& a, int64_t T) { return int64_t{a.n_heads} * T * (a.pos0 + T) * a.head_dim; }

// Key or value row j of a cache, from column col on.
const char* cache_at(const Tensor& cache, int64_t j, int64_t col) {
  return cache.row<char>(j) + dtype_bytes(cache.dtype, col);
}

void attention_rows(const Kernels& k, Scratch& s, const Tensor& out, const Tensor& q, const Tensor& k_cache,
                    const Tensor& v_cache, const AttentionArgs& a) {
  const int64_t T = q.rows(), d = a.head_dim, n_keys = a.pos0 + T;
  const int group = a.n_heads / a.n_kv_heads;
  const int64_t work = attention_work(a, T);
  const int per_call = heads_per_call(group, int64_t{a.n_kv_heads} * T, threads_for(work));
  const int calls_per_group = (group + per_call - 1) / per_call;
  const int64_t calls = int64_t{a.n_kv_heads} * calls_per_group * T;  // call i: block i / T, query i % T
  const int nt = static_cast<int>(std::min<int64_t>(threads_for(work), calls));
  s.reserve(nt, static_cast<size_t>(per_call * n_keys));
  parallel_for(calls, work, [&](int64_t i) {
    const int64_t block = i / T, t = i % T, pos = a.pos0 + t;
    const int kv_head = static_cast<int>(block / calls_per_group);
    const int g0 = static_cast<int>(block % calls_per_group) * per_call;
    const int h0 = kv_head * group + g0;
    AttendGroup r{};
    r.out = out.row<float>(t) + h0 * d;
    r.q = q.row<float>(t) + h0 * d;
    r.heads = std::min(per_call, group - g0);
    r.k = cache_at(k_cache, 0, kv_head * d);
    r.v = cache_at(v_cache, 0, kv_head * d);
    r.kv_dtype = k_cache.dtype;
    r.k_stride = k_cache.row_stride();
    r.v_stride = v_cache.row_stride();
    r.d = d;
    r.first = first_key(a, pos);
    r.last = pos;
    r.scale = a.scale;
    r.slopes = a.alibi_slopes.empty() ? nullptr : a.alibi_slopes.ptr<float>() + h0;
    r.scores = s.thread(omp_get_thread_num());
    if (!a.probs.empty()) {
      r.probs_len = a.probs.dim(2);
      r.probs_stride = T * r.probs_len;
      r.probs = a.probs.ptr<float>() + (h0 * T + t) * r.probs_len;
    }
    k.attend(r);
  });
}

// Floats rounded up to whole 64-byte lines, so every piece carved from scratch stays aligned.
int64_t lines(int64_t floats) { return (floats + 15) / 16 * 16; }

// One thread's working memory on the tiled road. Panel p (query head g, queries panel pq of the
// item: p = g * panels + pq) has its packed queries at q + p * d * mr, its output rows at
// o + p * mr * dp and its running max and sum at m + p * mr, l + p * mr.
struct TileWork {
  float *keys, *values, *scores, *probs, *q, *o, *m, *l;
};

class TiledAttention {
 public:
  TiledAttention(const Kernels& k, const Tensor& out, const Tensor& q, const Tensor& k_cache,
                 const Tensor& v_cache, const AttentionArgs& a)
      : k_(k), out_(out), q_(q), kc_(k_cache), vc_(v_cache), a_(a), T_(q.rows()), d_(a.head_dim),
        dp_((d_ + k.nr - 1) / k.nr * k.nr), mr_(k.mr), nr_(k.nr), group_(a.n_heads / a.n_kv_heads),
        panels_(std::max<int64_t>(1, kItemRows / (group_ * mr_))), item_panels_(group_ * panels_),
        rows_(item_panels_ * mr_), chunk_(panels_ * mr_), chunks_((T_ + chunk_ - 1) / chunk_) {}

  int64_t items() const { return a_.n_kv_heads * chunks_; }

  size_t scratch_floats() const {
    return static_cast<size_t>(kKeyBlock * d_ + kKeyBlock * dp_ + mr_ * kKeyBlock + lines(kKeyBlock * mr_) +
                               lines(rows_ * d_) + rows_ * dp_ + 2 * lines(rows_));
  }

  // Item i: KV head i / chunks_, and the chunks from the last (the most keys) to the first, so
  // that threads taking items in turn end together.
  void run(int64_t i, float* scratch) const {
    const int kv_head = static_cast<int>(i / chunks_);
    const int64_t t0 = (chunks_ - 1 - i % chunks_) * chunk_, t1 = std::min(T_, t0 + chunk_);
    const TileWork w = carve(scratch);
    start(w, kv_head, t0, t1);
    for (int64_t j0 = first_key(t0); j0 < a_.pos0 + t1; j0 += kKeyBlock) {
      const int64_t n = std::min(kKeyBlock, a_.pos0 + t1 - j0);
      pack_block(w, kv_head, j0, n);
      for (int64_t p = 0; p < item_panels_; ++p) panel_block(w, kv_head, p, t0, t1, j0, n);
    }
    finish(w, kv_head, t0, t1);
  }

 private:
  TileWork carve(float* p) const {
    TileWork w{};
    w.keys = p, p += kKeyBlock * d_;
    w.values = p, p += kKeyBlock * dp_;
    w.scores = p, p += mr_ * kKeyBlock;
    w.probs = p, p += lines(kKeyBlock * mr_);
    w.q = p, p += lines(rows_ * d_);
    w.o = p, p += rows_ * dp_;
    w.m = p, p += lines(rows_);
    w.l = p;
    return w;
  }

  int64_t first_key(int64_t t) const { return fast::first_key(a_, a_.pos0 + t); }  // of query t
  int head(int kv_head, int64_t p) const { return kv_head * group_ + static_cast<int>(p / panels_); }
  int64_t panel_query(int64_t t0, int64_t p) const { return t0 + p % panels_ * mr_; }

  // Packs the item's queries, times the scale; zero outputs and sums, maxima at -inf.
  void start(const TileWork& w, int kv_head, int64_t t0, int64_t t1) const {
    for (int64_t p = 0; p < item_panels_; ++p) {
      const int64_t tp = panel_query(t0, p);
      if (tp >= t1) continue;
      float* qp = w.q + p * d_ * mr_;
      k_.pack_x(qp, q_.row<float>(tp) + head(kv_head, p) * d_, q_.row_stride(), std::min(mr_, t1 - tp), d_);
      k_.scale(qp, qp, a_.scale, d_ * mr_);
    }
    std::fill(w.o, w.o + rows_ * dp_, 0.0f);
    std::fill(w.m, w.m + rows_, -std::numeric_limits<float>::infinity());
    std::fill(w.l, w.l + rows_, 0.0f);
  }

  // Keys [j0, j0 + n): keys as the GEMM packs rows of W (nr keys interleaved over d), values as
  // dp / nr panels of [kKeyBlock, nr] (nr columns of every key, zero past d).
  void pack_block(const TileWork& w, int kv_head, int64_t j0, int64_t n) const {
    const bool f16 = kc_.dtype == DType::F16;
    for (int64_t j = 0; j < n; j += nr_) {
      const char* src = cache_at(kc_, j0 + j, kv_head * d_);
      const int64_t rows = std::min(nr_, n - j);
      if (f16) k_.pack_w_f16(w.keys + j * d_, reinterpret_cast<const uint16_t*>(src), kc_.row_stride(), rows, d_);
      else k_.pack_w_f32(w.keys + j * d_, reinterpret_cast<const float*>(src), kc_.row_stride(), rows, d_);
    }
    for (int64_t j = 0; j < n; ++j) {
      const char* src = cache_at(vc_, j0 + j, kv_head * d_);
      for (int64_t c = 0; c < dp_; c += nr_) {
        float* dst = w.values + c * kKeyBlock + j * nr_;
        const int64_t cols = std::min(nr_, d_ - c);
        if (f16) k_.f16_to_f32(dst, reinterpret_cast<const uint16_t*>(src) + c, cols);
        else std::copy_n(reinterpret_cast<const float*>(src) + c, cols, dst);
        std::fill(dst + cols, dst + nr_, 0.0f);
      }
    }
  }

  // Panel p of the item against keys [j0, j0 + n): scores, online softmax, out += P V.
  void panel_block(const TileWork& w, int kv_head, int64_t p, int64_t t0, int64_t t1, int64_t j0,
                   int64_t n) const {
    const int64_t tp = panel_query(t0, p), rows = std::min(mr_, t1 - tp);
    if (rows <= 0 || j0 + n <= first_key(tp)) return;
    n = std::min(n, a_.pos0 + tp + rows - j0);  // keys past the panel's last query: none
    if (n <= 0) return;
    for (int64_t j = 0; j < n; j += nr_)
      k_.gemm_tile(w.scores + j, kKeyBlock, w.q + p * d_ * mr_, w.keys + j * d_, d_, false);
    float* o = w.o + p * mr_ * dp_;
    const float* slopes = a_.alibi_slopes.empty() ? nullptr : a_.alibi_slopes.ptr<float>();
    for (int64_t i = 0; i < mr_; ++i) {
      float* s = w.scores + i * kKeyBlock;
      const int64_t pos = a_.pos0 + tp + i;
      const int64_t lo = std::max(first_key(tp + i), j0) - j0, hi = std::min(pos + 1, j0 + n) - j0;
      if (i >= rows || hi <= lo) {  // no key of this block for this row
        std::fill(s, s + n, 0.0f);
        continue;
      }
      std::fill(s, s + lo, -std::numeric_limits<float>::infinity());
      std::fill(s + hi, s + n, -std::numeric_limits<float>::infinity());
      if (slopes) {  // ALiBi: slope * (j - pos), as the row road
        const float slope = slopes[head(kv_head, p)];
        for (int64_t j = lo; j < hi; ++j) s[j] += slope * static_cast<float>(j0 + j - pos);
      }
      const int64_t row = p * mr_ + i;
      const float factor = k_.online_softmax(s, n, w.m + row, w.l + row);
      if (factor != 1.0f) k_.scale(o + i * dp_, o + i * dp_, factor, dp_);
    }
    k_.pack_x(w.probs, w.scores, kKeyBlock, mr_, n);
    for (int64_t c = 0; c < dp_; c += nr_) k_.gemm_tile(o + c, dp_, w.probs, w.values + c * kKeyBlock, n, true);
  }

  // out = o / l for the item's queries.
  void finish(const TileWork& w, int kv_head, int64_t t0, int64_t t1) const {
    for (int64_t p = 0; p < item_panels_; ++p) {
      const int64_t tp = panel_query(t0, p);
      for (int64_t i = 0; i < mr_ && tp + i < t1; ++i) {
        const int64_t row = p * mr_ + i;
        k_.scale(out_.row<float>(tp + i) + head(kv_head, p) * d_, w.o + row * dp_, 1.0f / w.l[row], d_);
      }
    }
  }

  const Kernels& k_;
  const Tensor &out_, &q_, &kc_, &vc_;
  const AttentionArgs& a_;
  int64_t T_, d_, dp_, mr_, nr_;
  int group_;
  int64_t panels_;        // panels of mr queries per query head in an item
  int64_t item_panels_;   // panels per item, over all its query heads
  int64_t rows_;          // output rows per item (item_panels_ x mr)
  int64_t chunk_, chunks_;
};

void attention_tiled(const Kernels& k, Scratch& s, const Tensor& out, const Tensor& q, const Tensor& k_cache,
                     const Tensor& v_cache, const AttentionArgs& a) {
  const TiledAttention tiled(k, out, q, k_cache, v_cache, a);
  const int64_t items = tiled.items(), T = q.rows();
  const int nt = static_cast<int>(std::min<int64_t>(threads_for(attention_work(a, T)), items));
  s.reserve(nt, tiled.scratch_floats());
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
  for (int64_t i = 0; i < items; ++i) tiled.run(i, s.thread(omp_get_thread_num()));
}

}  // namespace

void attention(const Kernels& k, Scratch& s, const Tensor& out, const Tensor& q, const Tensor& k_cache,
               const Tensor& v_cache, const AttentionArgs& a) {
  ref::check_attention(out, q, k_cache, v_cache, a);
  if (q.rows() >= kTiledQueries && a.probs.empty()) return attention_tiled(k, s, out, q, k_cache, v_cache, a);
  attention_rows(k, s, out, q, k_cache, v_cache, a);
}

}  // namespace purellm::cpu::fast
