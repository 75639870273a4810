// out = x W^T + bias on the CPU: a threaded GEMV for decode (T == 1) and a BLIS-style blocked
// GEMM for prefill (T > 1).
//
// GEMV is bound by reading W once: each thread streams one contiguous block of W's rows.
//
// GEMM follows the GotoBLAS/BLIS loop nest. Each thread owns a contiguous range of output
// columns (rows of W) and, for each block of it:
//   pack a kKc x kNc block of W (converted to F32, nr rows interleaved)       -> L2/L3
//     pack a kMc x kKc block of x (mr rows interleaved)                       -> L2
//       for each nr-wide sliver of packed W (stays in L1), for each mr rows of packed x:
//         gemm_tile: an mr x nr block of out in registers, kKc multiply-adds deep.
// F16/BF16 weights are converted while packing, so the tile kernel only ever sees F32.
#include <algorithm>

#include "tensor/cpu/ops.hpp"
#include "tensor/cpu/reference.hpp"

namespace purellm::cpu::fast {
namespace {

constexpr int64_t kKc = 256;   // depth of one packed block: a W sliver kKc x nr is 16 KiB (AVX2)
constexpr int64_t kMc = 144;   // rows of x per packed block (a multiple of every mr)
constexpr int64_t kNc = 1536;  // rows of W per packed block
constexpr int64_t kMaxTile = 6 * 64;  // mr * nr of the widest table, for edge tiles

void gemv(const Kernels& k, const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias) {
  const int64_t K = x.cols(), N = w.rows(), ldw = w.row_stride();
  const float* xv = x.row<float>(0);
  const float* b = bias.empty() ? nullptr : bias.ptr<float>();
  const int nt = static_cast<int>(std::min<int64_t>(threads_for(N * K), N));
#pragma omp parallel num_threads(nt)
  {
    // 16 rows = one 64-byte line of out per block boundary.
    const Range r = split(N, omp_get_num_threads(), omp_get_thread_num(), 16);
    const int64_t n = r.end - r.begin;
    float* y = out.row<float>(0) + r.begin;
    const float* br = b ? b + r.begin : nullptr;
    if (n > 0) {
      switch (w.dtype) {
        case DType::F16: k.gemv_f16(y, xv, w.row<uint16_t>(r.begin), ldw, K, n, br); break;
        case DType::BF16: k.gemv_bf16(y, xv, w.row<uint16_t>(r.begin), ldw, K, n, br); break;
        default: k.gemv_f32(y, xv, w.row<float>(r.begin), ldw, K, n, br); break;
      }
    }
  }
}

// Packs rows [n0, n0 + rows) and columns [k0, k0 + kc) of W into dst as slivers of nr rows.
void pack_w_block(const Kernels& k, float* dst, const Tensor& w, int64_t n0, int64_t rows, int64_t k0,
                  int64_t kc) {
  const int64_t ldw = w.row_stride();
  for (int64_t j = 0; j < rows; j += k.nr) {
    const int64_t nj = std::min<int64_t>(k.nr, rows - j);
    float* d = dst + j * kc;
    switch (w.dtype) {
      case DType::F16: k.pack_w_f16(d, w.row<uint16_t>(n0 + j) + k0, ldw, nj, kc); break;
      case DType::BF16: k.pack_w_bf16(d, w.row<uint16_t>(n0 + j) + k0, ldw, nj, kc); break;
      default: k.pack_w_f32(d, w.row<float>(n0 + j) + k0, ldw, nj, kc); break;
    }
  }
}

// One mr x nr tile of out at (t, n). Edge tiles go through a full-size buffer, then only
// their valid part is written.
void tile(const Kernels& k, const Tensor& out, int64_t t, int64_t n, int64_t rows, int64_t cols,
          const float* a, const float* b, int64_t kc, bool accumulate) {
  float* c = out.row<float>(t) + n;
  if (rows == k.mr && cols == k.nr) return k.gemm_tile(c, out.row_stride(), a, b, kc, accumulate);
  alignas(64) float buf[kMaxTile];
  k.gemm_tile(buf, k.nr, a, b, kc, false);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      float* cij = c + i * out.row_stride() + j;
      *cij = (accumulate ? *cij : 0.0f) + buf[i * k.nr + j];
    }
}

// out[:, n0:n1] for one thread, with its own packing buffers wbuf [kKc * kNc] and xbuf [kMc * kKc].
void gemm_columns(const Kernels& k, const Tensor& out, const Tensor& x, const Tensor& w, int64_t n0,
                  int64_t n1, float* wbuf, float* xbuf) {
  const int64_t T = x.rows(), K = x.cols();
  for (int64_t jc = n0; jc < n1; jc += kNc) {
    const int64_t nc = std::min(kNc, n1 - jc);
    for (int64_t pc = 0; pc < K; pc += kKc) {
      const int64_t kc = std::min(kKc, K - pc);
      pack_w_block(k, wbuf, w, jc, nc, pc, kc);
      for (int64_t ic = 0; ic < T; ic += kMc) {
        const int64_t mc = std::min(kMc, T - ic);
        for (int64_t i = 0; i < mc; i += k.mr)
          k.pack_x(xbuf + i * kc, x.row<float>(ic + i) + pc, x.row_stride(), std::min<int64_t>(k.mr, mc - i), kc);
        for (int64_t j = 0; j < nc; j += k.nr)
          for (int64_t i = 0; i < mc; i += k.mr)
            tile(k, out, ic + i, jc + j, std::min<int64_t>(k.mr, mc - i), std::min<int64_t>(k.nr, nc - j),
                 xbuf + i * kc, wbuf + j * kc, kc, pc > 0);
      }
    }
  }
}

void gemm(const Kernels& k, Scratch& s, const Tensor& out, const Tensor& x, const Tensor& w,
          const Tensor& bias) {
  const int64_t T = x.rows(), K = x.cols(), N = w.rows();
  const int nt = static_cast<int>(std::min<int64_t>(threads_for(T * N * K), (N + k.nr - 1) / k.nr));
  s.reserve(nt, static_cast<size_t>(kKc * kNc + kMc * kKc));
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num();
    const Range r = split(N, omp_get_num_threads(), t, k.nr);
    if (r.end > r.begin) {
      float* wbuf = s.thread(t);
      gemm_columns(k, out, x, w, r.begin, r.end, wbuf, wbuf + kKc * kNc);
      if (!bias.empty())
        for (int64_t i = 0; i < T; ++i)
          k.add(out.row<float>(i) + r.begin, out.row<float>(i) + r.begin, bias.ptr<float>() + r.begin,
                r.end - r.begin);
    }
  }
}

}  // namespace

void matmul(const Kernels& k, Scratch& s, const Tensor& out, const Tensor& x, const Tensor& w,
            const Tensor& bias) {
  ref::check_matmul(out, x, w, bias);
  if (x.rows() == 0 || w.rows() == 0) return;
  if (x.cols() == 0) {  // an empty sum: out = bias
    for (int64_t t = 0; t < x.rows(); ++t)
      for (int64_t n = 0; n < w.rows(); ++n) out.row<float>(t)[n] = bias.empty() ? 0.0f : bias.ptr<float>()[n];
    return;
  }
  if (x.rows() == 1)
    gemv(k, out, x, w, bias);
  else
    gemm(k, s, out, x, w, bias);
}

}  // namespace purellm::cpu::fast
