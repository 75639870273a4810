// Attention over the KV cache on the CPU: one kernel call per (head, query) row, threads over
// those rows. Only one row of scores per thread exists at a time ([pos0 + T] floats).
#include <algorithm>

#include "tensor/cpu/ops.hpp"
#include "tensor/cpu/reference.hpp"

namespace purellm::cpu::fast {

void attention(const Kernels& k, Scratch& s, const Tensor& out, const Tensor& q, const Tensor& k_cache,
               const Tensor& v_cache, const AttentionArgs& a) {
  ref::check_attention(out, q, k_cache, v_cache, a);
  const int64_t T = q.rows(), d = a.head_dim, n_keys = a.pos0 + T;
  const int group = a.n_heads / a.n_kv_heads;
  const int64_t rows = a.n_heads * T;  // row i: head i / T, query i % T (a thread keeps whole heads)
  const int nt = static_cast<int>(std::min<int64_t>(threads_for(rows * n_keys * d), rows));
  s.reserve(nt, static_cast<size_t>(n_keys));
  parallel_for(rows, rows * n_keys * d, [&](int64_t i) {
    const int h = static_cast<int>(i / T);
    const int64_t t = i % T, pos = a.pos0 + t;
    const int64_t kv_off = static_cast<int64_t>(h / group) * d;
    AttendRow r{};
    r.out = out.row<float>(t) + h * d;
    r.q = q.row<float>(t) + h * d;
    r.k = k_cache.row<float>(0) + kv_off;
    r.v = v_cache.row<float>(0) + kv_off;
    r.k_stride = k_cache.row_stride();
    r.v_stride = v_cache.row_stride();
    r.d = d;
    r.first = a.window > 0 ? std::max<int64_t>(0, pos - a.window + 1) : 0;
    r.last = pos;
    r.scale = a.scale;
    r.slope = a.alibi_slopes.empty() ? 0.0f : a.alibi_slopes.ptr<float>()[h];
    r.scores = s.thread(omp_get_thread_num());
    if (!a.probs.empty()) {
      r.probs_len = a.probs.dim(2);
      r.probs = a.probs.ptr<float>() + (h * T + t) * r.probs_len;
    }
    k.attend(r);
  });
}

}  // namespace purellm::cpu::fast
