// out = x W^T + bias on the CPU: a threaded GEMV for decode (T == 1) and a BLIS-style blocked
// GEMM for prefill (T > 1).
//
// GEMV is bound by reading W once: each thread streams one contiguous block of W's rows, its
// size following the thread's measured speed (SpeedSplit: a slower core gets fewer rows).
//
// GEMM follows the GotoBLAS/BLIS structure, arranged so that each thread works out of its own
// L1 and L2 (on a shared host the L3 belongs to everyone):
//   the threads pack all of x once, in panels of mr rows interleaved over K   (shared)
//   each thread takes contiguous ranges of output columns (rows of W) from a WorkQueue; per
//   block of kNc of them:
//     pack a kNc x kKc block of W, converted to F32, nr rows interleaved        -> L2
//       for each x panel (mr rows x kKc, stays in L1), for each nr sliver of the W block:
//         gemm_tile: an mr x nr block of out in registers, kKc multiply-adds deep.
// F16/BF16 weights are converted while packing, so the tile kernel only ever sees F32.
//
// Quantized weights (Q8_0, Q4_0) with few tokens (decode) take another road: the threads
// quantize the rows of x to Q8 blocks once (shared scratch), then each thread runs the
// integer-dot kernel over its own contiguous range of rows of W, every row block against all
// tokens (quantized W is 4-7x smaller than F32, so a block of its rows stays in L1).
// With kQuantGemmTokens tokens or more (prefill) plain Q8_0 / Q4_0 go through the F32 GEMM above
// instead, which is faster there than their integer kernels: W is dequantized while packing, and
// x is rounded through the same activation quantizer first, so both roads multiply the same
// numbers (d_w q_w times d_x q_x) and differ only in the order of the float sums. The R16
// layouts (AVX-512 VNNI) stay on the integer road at any length: 2.5-3x the GEMM at 128 and 512
// tokens (bench, TinyLlama and GPT-2 shapes, 2 threads).
#include <algorithm>

#include "tensor/cpu/ops.hpp"
#include "tensor/cpu/reference.hpp"
#include "tensor/quant.hpp"

namespace purellm::cpu::fast {
namespace {

constexpr int64_t kKc = 256;  // depth of a block: an x panel (mr x kKc) is 6 KiB
constexpr int64_t kNc = 256;  // rows of W per packed block: kNc x kKc floats = 256 KiB
constexpr int64_t kMaxTile = 6 * 64;  // mr * nr of the widest table, for edge tiles
constexpr int64_t kMaxNr = 64;        // nr of the widest table
// From this many tokens on, quantized W goes through the F32 GEMM (GPT-2 shapes, 2 threads, AVX-512
// VNNI: the integer kernels win at 64 tokens, the GEMM at 128).
constexpr int64_t kQuantGemmTokens = 96;

// Row n of quantized W from column k0 (a multiple of 32) on.
const uint8_t* quant_row(const Tensor& w, int64_t n, int64_t k0) {
  return static_cast<const uint8_t*>(w.data) + dtype_bytes(w.dtype, n * w.row_stride() + k0);
}

void gemv(const Kernels& k, const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias) {
  const int64_t K = x.cols(), N = w.rows(), ldw = w.row_stride();
  const float* xv = x.row<float>(0);
  const float* b = bias.empty() ? nullptr : bias.ptr<float>();
  const int nt = static_cast<int>(std::min<int64_t>(threads_for(N * K), N));
  static SpeedSplit speeds;  // 16 rows = one 64-byte line of out per boundary
  parallel_parts(speeds, N, nt, 16, [&](Range r) {
    const int64_t n = r.end - r.begin;
    float* y = out.row<float>(0) + r.begin;
    const float* br = b ? b + r.begin : nullptr;
    switch (w.dtype) {
      case DType::F16: k.gemv_f16(y, xv, w.row<uint16_t>(r.begin), ldw, K, n, br); break;
      case DType::BF16: k.gemv_bf16(y, xv, w.row<uint16_t>(r.begin), ldw, K, n, br); break;
      default: k.gemv_f32(y, xv, w.row<float>(r.begin), ldw, K, n, br); break;
    }
  });
}

// Rows [n0, n0 + rows) of R16 W, columns [k0, k0 + kc), gathered back into plain rows at dst
// (kc / 32 blocks each) and packed by pack_w_q8_0 / pack_w_q4_0.
void pack_r16(const Kernels& k, float* d, const Tensor& w, int64_t n0, int64_t rows, int64_t k0, int64_t kc) {
  alignas(64) uint8_t plain[kMaxNr * kKc / kQuantBlock * sizeof(BlockQ8_0)];
  const DType dt = plain_of(w.dtype);
  const int64_t nb = kc / kQuantBlock, ldb = static_cast<int64_t>(dtype_bytes(dt, kc));
  for (int64_t j = 0; j < rows; ++j)
    blocks_of_row(w.dtype, w.data, w.rows(), w.cols(), n0 + j, k0 / kQuantBlock, nb, plain + j * ldb);
  (dt == DType::Q8_0 ? k.pack_w_q8_0 : k.pack_w_q4_0)(d, plain, ldb, rows, kc);
}

// Packs rows [n0, n0 + rows) and columns [k0, k0 + kc) of W into dst as slivers of nr rows.
void pack_w_block(const Kernels& k, float* dst, const Tensor& w, int64_t n0, int64_t rows, int64_t k0,
                  int64_t kc) {
  const int64_t ldw = w.row_stride(), ldb = static_cast<int64_t>(dtype_bytes(w.dtype, ldw));
  for (int64_t j = 0; j < rows; j += k.nr) {
    const int64_t nj = std::min<int64_t>(k.nr, rows - j);
    float* d = dst + j * kc;
    switch (w.dtype) {
      case DType::F16: k.pack_w_f16(d, w.row<uint16_t>(n0 + j) + k0, ldw, nj, kc); break;
      case DType::BF16: k.pack_w_bf16(d, w.row<uint16_t>(n0 + j) + k0, ldw, nj, kc); break;
      case DType::Q8_0: k.pack_w_q8_0(d, quant_row(w, n0 + j, k0), ldb, nj, kc); break;
      case DType::Q4_0: k.pack_w_q4_0(d, quant_row(w, n0 + j, k0), ldb, nj, kc); break;
      case DType::Q8_0_R16:
      case DType::Q4_0_R16: pack_r16(k, d, w, n0 + j, nj, k0, kc); break;
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

// Rows [t0, t0 + rows) of x rounded through the activation quantizer (d * q, as qmatmul
// multiplies them) into dst [rows, K]; `work` holds one QuantizedActs row.
void round_rows_q8(const Tensor& x, int64_t t0, int64_t rows, float* dst, void* work) {
  const int64_t K = x.cols();
  QuantizedActs a = QuantizedActs::carve(work, 1, K);
  for (int64_t i = 0; i < rows; ++i) {
    quantize_acts_row(x.row<float>(t0 + i), a, 0);
    for (int64_t j = 0; j < K; ++j) dst[i * K + j] = a.d[j / kQuantBlock] * static_cast<float>(a.q[j]);
  }
}

// Floats of per-thread scratch round_rows_q8 needs for mr rows, after the W block buffer.
size_t rounding_floats(const Kernels& k, int64_t K) {
  return static_cast<size_t>(k.mr * K) + QuantizedActs::bytes_for(1, K) / sizeof(float) + 16;
}

// Packed x: panel p (rows p*mr .. p*mr+mr-1) holds K steps of mr values; within it, the block
// starting at column pc is contiguous (kc * mr floats at p * K * mr + pc * mr). With `rounded`
// (scratch for rounding_floats), the rows are first rounded through the activation quantizer.
void pack_x_panel(const Kernels& k, float* xp, const Tensor& x, int64_t p, float* rounded) {
  const int64_t K = x.cols(), t0 = p * k.mr, rows = std::min<int64_t>(k.mr, x.rows() - t0);
  if (!rounded) return k.pack_x(xp + p * K * k.mr, x.row<float>(t0), x.row_stride(), rows, K);
  float* work = rounded + k.mr * K;
  work += (64 - reinterpret_cast<uintptr_t>(work) % 64) % 64 / sizeof(float);
  round_rows_q8(x, t0, rows, rounded, work);
  k.pack_x(xp + p * K * k.mr, rounded, K, rows, K);
}

// out[:, n0:n1] for one thread, from the packed x and its own W block buffer wbuf [kNc * kKc].
void gemm_columns(const Kernels& k, const Tensor& out, const float* xp, int64_t T, int64_t K, const Tensor& w,
                  int64_t n0, int64_t n1, float* wbuf) {
  for (int64_t jc = n0; jc < n1; jc += kNc) {
    const int64_t nc = std::min(kNc, n1 - jc);
    for (int64_t pc = 0; pc < K; pc += kKc) {
      const int64_t kc = std::min(kKc, K - pc);
      pack_w_block(k, wbuf, w, jc, nc, pc, kc);
      for (int64_t i = 0; i < T; i += k.mr) {
        const float* panel = xp + i * K + pc * k.mr;
        for (int64_t j = 0; j < nc; j += k.nr)
          tile(k, out, i, jc + j, std::min<int64_t>(k.mr, T - i), std::min<int64_t>(k.nr, nc - j), panel,
               wbuf + j * kc, kc, pc > 0);
      }
    }
  }
}

void gemm(const Kernels& k, Scratch& s, const Tensor& out, const Tensor& x, const Tensor& w,
          const Tensor& bias) {
  const int64_t T = x.rows(), K = x.cols(), N = w.rows();
  const int64_t panels = (T + k.mr - 1) / k.mr;
  const int nt = static_cast<int>(std::min<int64_t>(threads_for(T * N * K), (N + k.nr - 1) / k.nr));
  const bool round_x = is_quantized(w.dtype);
  float* xp = s.shared(static_cast<size_t>(panels * k.mr * K));
  s.reserve(nt, static_cast<size_t>(kNc * kKc) + (round_x ? rounding_floats(k, K) : 0));
  WorkQueue columns(N, kNc / 2);  // 128 columns at least: each range reads all of the packed x
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num();
#pragma omp for schedule(static)
    for (int64_t p = 0; p < panels; ++p) pack_x_panel(k, xp, x, p, round_x ? s.thread(t) + kNc * kKc : nullptr);
    columns.for_each([&](Range r) {
      gemm_columns(k, out, xp, T, K, w, r.begin, r.end, s.thread(t));
      if (!bias.empty())
        for (int64_t i = 0; i < T; ++i)
          k.add(out.row<float>(i) + r.begin, out.row<float>(i) + r.begin, bias.ptr<float>() + r.begin,
                r.end - r.begin);
    });
  }
}

void qmatmul(const Kernels& k, Scratch& s, const Tensor& out, const Tensor& x, const Tensor& w,
             const Tensor& bias) {
  const int64_t T = x.rows(), K = x.cols(), N = w.rows();
  const int64_t ldw = static_cast<int64_t>(dtype_bytes(w.dtype, w.row_stride()));
  const size_t bytes = QuantizedActs::bytes_for(T, K);
  QuantizedActs xq = QuantizedActs::carve(s.shared((bytes + sizeof(float) - 1) / sizeof(float)), T, K);
  const auto kernel = is_interleaved(w.dtype) ? k.qmatmul_r16[w.dtype == DType::Q4_0_R16]
                      : w.dtype == DType::Q8_0 ? k.qmatmul_q8_0 : k.qmatmul_q4_0;
  const auto* wp = static_cast<const uint8_t*>(w.data);
  // Work in bytes of W read times tokens: a decode GEMV of a small matrix stays on one thread.
  const int nt = static_cast<int>(std::min<int64_t>(threads_for(T * N * K), N));
  if (T == 1)  // on this thread: a region's barrier costs more than one row
    quantize_acts_row(x.row<float>(0), xq, 0);
  else
    parallel_for(T, T * K, [&](int64_t t) { quantize_acts_row(x.row<float>(t), xq, t); });
  // Parts sized by the threads' speeds (R16 layouts: whole groups of 16 rows). A WorkQueue's
  // chunks cost more here than they save: GPT-2 Q8_0 decode 449-469 tok/s with equal parts,
  // 438-454 with a WorkQueue (chunks of 64 rows), 401-436 (16 rows).
  static SpeedSplit speeds;
  parallel_parts(speeds, N, nt, 16, [&](Range r) {
    kernel(out.row<float>(0) + r.begin, out.row_stride(), xq, T, wp + r.begin * ldw, ldw, r.end - r.begin);
    if (!bias.empty())
      for (int64_t i = 0; i < T; ++i)
        k.add(out.row<float>(i) + r.begin, out.row<float>(i) + r.begin, bias.ptr<float>() + r.begin, r.end - r.begin);
  });
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
  const bool r16_kernel = is_interleaved(w.dtype) && k.qmatmul_r16, few = x.rows() < kQuantGemmTokens;
  if (is_interleaved(w.dtype) && !r16_kernel && few)
    ref::matmul(out, x, w, bias);  // no R16 kernel on this ISA (only tests get here): exact
  else if (is_quantized(w.dtype) && (few || r16_kernel))
    qmatmul(k, s, out, x, w, bias);
  else if (x.rows() == 1)
    gemv(k, out, x, w, bias);
  else
    gemm(k, s, out, x, w, bias);
}

}  // namespace purellm::cpu::fast
