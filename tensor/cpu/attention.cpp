// Attention over the KV cache on the CPU: one kernel call per (query, block of query heads that
// share a KV head), threads over those calls. Each call reads its keys and values once for all
// its heads (GQA/MQA), and only [heads x (pos0 + T)] scores per thread exist at a time.
#include <algorithm>

#include "tensor/cpu/ops.hpp"
#include "tensor/cpu/reference.hpp"

namespace purellm::cpu::fast {
namespace {

constexpr int kMaxHeadsPerCall = 8;  // bounds the scores scratch

// Query heads per kernel call: the whole group up to kMaxHeadsPerCall, halved while that would
// leave threads without a call (MQA decode: one KV head, many query heads).
int heads_per_call(int group, int64_t kv_rows, int threads) {
  int h = std::min(group, kMaxHeadsPerCall);
  while (h > 1 && kv_rows * ((group + h - 1) / h) < threads) h = (h + 1) / 2;
  return h;
}

}  // namespace

void attention(const Kernels& k, Scratch& s, const Tensor& out, const Tensor& q, const Tensor& k_cache,
               const Tensor& v_cache, const AttentionArgs& a) {
  ref::check_attention(out, q, k_cache, v_cache, a);
  const int64_t T = q.rows(), d = a.head_dim, n_keys = a.pos0 + T;
  const int group = a.n_heads / a.n_kv_heads;
  const int64_t work = int64_t{a.n_heads} * T * n_keys * d;
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
    r.k = k_cache.row<char>(0) + dtype_bytes(k_cache.dtype, kv_head * d);
    r.v = v_cache.row<char>(0) + dtype_bytes(v_cache.dtype, kv_head * d);
    r.kv_dtype = k_cache.dtype;
    r.k_stride = k_cache.row_stride();
    r.v_stride = v_cache.row_stride();
    r.d = d;
    r.first = a.window > 0 ? std::max<int64_t>(0, pos - a.window + 1) : 0;
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

}  // namespace purellm::cpu::fast
