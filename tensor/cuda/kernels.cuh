// The CUDA plug-in's kernels: one __global__ function per op, each with its launch shape.
//
// What every kernel here assumes:
//   - activations are F32 matrices passed as Mat (pointer + row stride in floats), so a column
//     range of a wider matrix (q inside a fused qkv) is an operand without a copy;
//   - weights are F32, F16 or BF16, read through a Weight type (F32W, F16W, BF16W) and
//     accumulated in F32;
//   - indices are int64_t, so [T, vocab] logits or a long KV cache never overflow;
//   - reductions go through shared memory and __syncthreads() only (no warp shuffles), so
//     tests/cuda_emulator.hpp can run every kernel on a CPU; block sizes are powers of two.
// The scalar reference (tensor/cpu/reference.cpp) defines what each op computes; the op tests
// compare these kernels with it.
#pragma once

#include <math.h>

#include <cstdint>
#include <cstring>

namespace purellm::cuda {

constexpr int kThreads = 256;        // block size of the elementwise, row and matmul kernels
constexpr int kMaxThreads = 1024;    // largest block (ssm_scan: one thread per state element)
constexpr int kGemvRows = 8;         // matmul with at most this many rows of x runs as a GEMV
constexpr int kGemvThreads = 128;    // GEMV block size
constexpr int kTile = 64;            // GEMM: a block computes a kTile x kTile tile of out ...
constexpr int kTileK = 16;           // ... stepping through K kTileK columns at a time
constexpr int kAttnThreads = 128;    // attention: threads per (query, head); also keys per chunk
constexpr int kMaxHeadDim = 512;     // attention keeps one output row per block in shared memory
constexpr int kMaxConvWidth = 16;    // conv1d_causal keeps the last K inputs in registers

// An F32 matrix operand: element (r, c) is data[r * ld + c].
struct Mat {
  float* data;
  int64_t ld;
  __device__ float* row(int64_t r) const { return data + r * ld; }
};

// ---- 16-bit floats --------------------------------------------------------------------------
// Bit conversions written out (not cuda_fp16.h) so they run on a CPU too. Both are exact.

__device__ inline float float_from_bits(uint32_t bits) {
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

__device__ inline float bf16_bits_to_float(uint16_t h) { return float_from_bits(uint32_t{h} << 16); }

__device__ inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  if (exponent == 0x1f) return float_from_bits(sign | 0x7f800000u | (mantissa << 13));  // inf, NaN
  if (exponent == 0) {                                                  // zero, subnormal
    const float m = static_cast<float>(mantissa) * 0x1p-24f;
    return sign ? -m : m;
  }
  return float_from_bits(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

// How a weight matrix stores its elements; load() gives element i of a row as F32.
struct F32W {
  using T = float;
  __device__ static float load(const float* row, int64_t i) { return row[i]; }
};
struct F16W {
  using T = uint16_t;
  __device__ static float load(const uint16_t* row, int64_t i) { return half_bits_to_float(row[i]); }
};
struct BF16W {
  using T = uint16_t;
  __device__ static float load(const uint16_t* row, int64_t i) { return bf16_bits_to_float(row[i]); }
};

// ---- block reductions -----------------------------------------------------------------------

struct Sum {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct Max {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Reduces v over the block with op (a tree in shared memory); every thread gets the result.
// scratch: blockDim.x floats of shared memory. Every thread of the block must call it.
template <class Op>
__device__ float block_reduce(float v, float* scratch, Op op) {
  const unsigned tid = threadIdx.x;
  scratch[tid] = v;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s /= 2) {
    if (tid < s) scratch[tid] = op(scratch[tid], scratch[tid + s]);
    __syncthreads();
  }
  const float result = scratch[0];
  __syncthreads();  // scratch may be reused right after
  return result;
}

__device__ inline float block_sum(float v, float* scratch) { return block_reduce(v, scratch, Sum{}); }
__device__ inline float block_max(float v, float* scratch) { return block_reduce(v, scratch, Max{}); }

__device__ inline int64_t flat_index() { return int64_t{blockIdx.x} * blockDim.x + threadIdx.x; }

// ---- elementwise ----------------------------------------------------------------------------
// The functions each elementwise op applies (see Backend for the exact definitions).

struct Add {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct Mul {
  __device__ float operator()(float a, float b) const { return a * b; }
};
struct AddScaled {  // out + s * x
  float s;
  __device__ float operator()(float o, float x) const { return o + s * x; }
};
struct Scale {
  float s;
  __device__ float operator()(float x) const { return s * x; }
};
struct Identity {
  __device__ float operator()(float x) const { return x; }
};
struct Relu {
  __device__ float operator()(float x) const { return x > 0.0f ? x : 0.0f; }
};
struct Gelu {  // exact: x * Phi(x)
  __device__ float operator()(float x) const { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
};
struct GeluTanh {  // "gelu_new": the tanh approximation
  __device__ float operator()(float x) const {
    return 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
  }
};
struct Silu {
  __device__ float operator()(float x) const { return x / (1.0f + expf(-x)); }
};
struct SiluMul {  // silu(gate) * up
  __device__ float operator()(float gate, float up) const { return gate / (1.0f + expf(-gate)) * up; }
};

// out(r, c) = f(x(r, c)) over [rows, cols]. out may be x.
// Launch: ceil(rows * cols / kThreads) blocks x kThreads threads, one element per thread.
template <class F>
__global__ void map1_kernel(Mat out, Mat x, int64_t rows, int64_t cols, F f) {
  const int64_t i = flat_index();
  if (i >= rows * cols) return;
  const int64_t r = i / cols, c = i % cols;
  out.row(r)[c] = f(x.row(r)[c]);
}

// out(r, c) = f(a(r, c), b(r, c)) over [rows, cols]. out may be a or b.
// Launch: ceil(rows * cols / kThreads) blocks x kThreads threads, one element per thread.
template <class F>
__global__ void map2_kernel(Mat out, Mat a, Mat b, int64_t rows, int64_t cols, F f) {
  const int64_t i = flat_index();
  if (i >= rows * cols) return;
  const int64_t r = i / cols, c = i % cols;
  out.row(r)[c] = f(a.row(r)[c], b.row(r)[c]);
}

// ---- rows -----------------------------------------------------------------------------------

// out = (x - mean) / sqrt(var + eps) * w + b, row by row (b may be null). out may be x.
// Launch: rows blocks x kThreads threads; block r normalises row r, threads stride over columns.
__global__ void layernorm_kernel(Mat out, Mat x, const float* w, const float* b, int64_t cols, float eps) {
  __shared__ float scratch[kThreads];
  const float* xr = x.row(blockIdx.x);
  float* o = out.row(blockIdx.x);
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum += xr[c];
  const float mean = block_sum(sum, scratch) / static_cast<float>(cols);
  float sq = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sq += (xr[c] - mean) * (xr[c] - mean);
  const float inv = 1.0f / sqrtf(block_sum(sq, scratch) / static_cast<float>(cols) + eps);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) o[c] = (xr[c] - mean) * inv * w[c] + (b ? b[c] : 0.0f);
}

// out = x / sqrt(mean(x^2) + eps) * w, row by row. out may be x.
// Launch: rows blocks x kThreads threads; block r normalises row r.
__global__ void rmsnorm_kernel(Mat out, Mat x, const float* w, int64_t cols, float eps) {
  __shared__ float scratch[kThreads];
  const float* xr = x.row(blockIdx.x);
  float* o = out.row(blockIdx.x);
  float sq = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sq += xr[c] * xr[c];
  const float inv = 1.0f / sqrtf(block_sum(sq, scratch) / static_cast<float>(cols) + eps);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) o[c] = xr[c] * inv * w[c];
}

// out = exp(x - max) / sum(exp(x - max)), row by row. out may be x.
// Launch: rows blocks x kThreads threads; block r handles row r.
__global__ void softmax_kernel(Mat out, Mat x, int64_t cols) {
  __shared__ float scratch[kThreads];
  const float* xr = x.row(blockIdx.x);
  float* o = out.row(blockIdx.x);
  float mx = -INFINITY;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) mx = fmaxf(mx, xr[c]);
  mx = block_max(mx, scratch);
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum += expf(xr[c] - mx);
  const float inv = 1.0f / block_sum(sum, scratch);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) o[c] = expf(xr[c] - mx) * inv;
}

// *result = the index of the largest of x[0 .. n), the first one on ties.
// Launch: 1 block x kThreads threads; each thread scans a strided slice, then a tree in
// shared memory keeps (larger value, or equal value at a smaller index).
__global__ void argmax_kernel(int64_t* result, const float* x, int64_t n) {
  __shared__ float best[kThreads];
  __shared__ int64_t where[kThreads];
  const unsigned tid = threadIdx.x;
  float b = -INFINITY;
  int64_t at = -1;
  for (int64_t i = tid; i < n; i += blockDim.x)
    if (at < 0 || x[i] > b) b = x[i], at = i;
  best[tid] = b;
  where[tid] = at;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s /= 2) {
    if (tid < s) {
      const float ob = best[tid + s];
      const int64_t oat = where[tid + s];
      const bool take = oat >= 0 && (where[tid] < 0 || ob > best[tid] || (ob == best[tid] && oat < where[tid]));
      if (take) best[tid] = ob, where[tid] = oat;
    }
    __syncthreads();
  }
  if (tid == 0) *result = where[0];
}

// ---- embedding and rotary -------------------------------------------------------------------

// out[t, :] = table[ids[t], :] as F32.  table: [V, D] rows ld_table apart.
// Launch: ceil(T * D / kThreads) blocks x kThreads threads, one output element per thread.
template <class W>
__global__ void embed_kernel(Mat out, const typename W::T* table, int64_t ld_table, const int32_t* ids,
                             int64_t T, int64_t D) {
  const int64_t i = flat_index();
  if (i >= T * D) return;
  const int64_t t = i / D, c = i % D;
  out.row(t)[c] = W::load(table + ids[t] * ld_table, c);
}

// Rotates the pairs (v[i], v[i + half]) of every head of x [T, n_heads * head_dim] in place by
// the angle of position pos0 + t: cos, sin are tables [positions, >= half].
// Launch: ceil(T * n_heads * half / kThreads) blocks x kThreads threads, one pair per thread.
__global__ void rope_kernel(Mat x, int64_t T, int n_heads, int head_dim, int half, int64_t pos0, Mat cos,
                            Mat sin) {
  const int64_t i = flat_index();
  if (i >= T * n_heads * half) return;
  const int64_t t = i / (int64_t{n_heads} * half), h = i / half % n_heads, k = i % half;
  float* v = x.row(t) + h * head_dim;
  const float c = cos.row(pos0 + t)[k], s = sin.row(pos0 + t)[k];
  const float a = v[k], b = v[k + half];
  v[k] = a * c - b * s;
  v[k + half] = b * c + a * s;
}

// ---- matmul ---------------------------------------------------------------------------------

// out[t, n] = x[t, :] . W[n, :] (+ bias[n]) for T <= kGemvRows rows of x: the decode step.
// Launch: N blocks x kGemvThreads threads. Block n reads weight row n once (threads stride over
// K, so a warp reads consecutive elements), then reduces its T dot products together in one
// shared-memory tree. Decode is bound by reading the weights; each is read exactly once.
template <class W>
__global__ void gemv_kernel(Mat out, Mat x, const typename W::T* w, int64_t ldw, const float* bias, int T,
                            int64_t K) {
  __shared__ float partial[kGemvRows][kGemvThreads];  // partial[t][i]: thread i's share of dot t
  const unsigned tid = threadIdx.x;
  const int64_t n = blockIdx.x;
  const typename W::T* wn = w + n * ldw;
  float acc[kGemvRows] = {};
  for (int64_t k = tid; k < K; k += blockDim.x) {
    const float wk = W::load(wn, k);
    for (int t = 0; t < kGemvRows; ++t)
      if (t < T) acc[t] += wk * x.row(t)[k];
  }
  for (int t = 0; t < kGemvRows; ++t) partial[t][tid] = acc[t];
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s /= 2) {
    if (tid < s)
      for (int t = 0; t < T; ++t) partial[t][tid] += partial[t][tid + s];
    __syncthreads();
  }
  if (tid < static_cast<unsigned>(T)) out.row(tid)[n] = partial[tid][0] + (bias ? bias[n] : 0.0f);
}

// out = x W^T (+ bias) for x [T, K], W [N, K]: the prefill GEMM.
// Launch: (ceil(N / kTile), ceil(T / kTile)) blocks x kThreads (16 x 16) threads. Block (bx, by)
// computes out[by*64 .. +64, bx*64 .. +64]; thread (ty, tx) owns the 4 x 4 outputs at rows
// ty*4 .., columns tx*4 ... Each step stages a [64, 16] slice of x and of W in shared memory
// (transposed, W converted to F32), so every element loaded from memory is used 64 times.
template <class W>
__global__ void gemm_kernel(Mat out, Mat x, const typename W::T* w, int64_t ldw, const float* bias, int64_t T,
                            int64_t N, int64_t K) {
  __shared__ float xs[kTileK][kTile];  // xs[k][i] = x[row0 + i, k0 + k]
  __shared__ float ws[kTileK][kTile];  // ws[k][j] = W[col0 + j, k0 + k]
  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
  const int64_t row0 = int64_t{blockIdx.y} * kTile, col0 = int64_t{blockIdx.x} * kTile;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < K; k0 += kTileK) {
    // Each slice holds kTile * kTileK = 1024 elements: 4 per thread, 16 threads per row.
    for (int e = tid; e < kTile * kTileK; e += kThreads) {
      const int i = e / kTileK, k = e % kTileK;
      const int64_t gk = k0 + k;
      xs[k][i] = row0 + i < T && gk < K ? x.row(row0 + i)[gk] : 0.0f;
      ws[k][i] = col0 + i < N && gk < K ? W::load(w + (col0 + i) * ldw, gk) : 0.0f;
    }
    __syncthreads();
    for (int k = 0; k < kTileK; ++k)
      for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 4; ++b) acc[a][b] += xs[k][ty * 4 + a] * ws[k][tx * 4 + b];
    __syncthreads();  // the slices are overwritten next step
  }
  for (int a = 0; a < 4; ++a)
    for (int b = 0; b < 4; ++b) {
      const int64_t r = row0 + ty * 4 + a, c = col0 + tx * 4 + b;
      if (r < T && c < N) out.row(r)[c] = acc[a][b] + (bias ? bias[c] : 0.0f);
    }
}

// ---- attention ------------------------------------------------------------------------------

struct AttentionParams {
  Mat out, q, k, v;        // out, q: [T, n_heads * d]; k, v: the cache [S, n_kv_heads * d]
  int n_heads, group, d;   // group = n_heads / n_kv_heads query heads share one KV head
  int64_t T, pos0, window; // query t sits at position pos0 + t; window 0: unlimited
  float scale;
  const float* slopes;     // ALiBi slope per head, or null
  float* probs;            // optional [n_heads, T, probs_len] softmax weights, or null
  int64_t probs_len;
};

// score(j) = scale * q . k_j + slope * j for query t of head h.
__device__ inline float attention_score(const AttentionParams& p, const float* q, int64_t kv_off, float slope,
                                        int64_t j) {
  const float* kj = p.k.row(j) + kv_off;
  float dot = 0.0f;
  for (int i = 0; i < p.d; ++i) dot += q[i] * kj[i];
  return p.scale * dot + slope * static_cast<float>(j);
}

// One query row of one head over its visible keys first .. pos, with an online softmax: keys
// are scored kAttnThreads at a time (one per thread), the running max m and sum l are rescaled
// as each chunk arrives, so any context length fits in shared memory.
// Launch: n_heads * T blocks x kAttnThreads threads; block b is head b / T, query b % T.
// Output dimensions are split over threads (thread i owns dims i, i + blockDim, ...).
__global__ void attention_kernel(AttentionParams p) {
  __shared__ float weight[kAttnThreads];  // exp(score - m) of the current chunk
  __shared__ float acc[kMaxHeadDim];      // sum of weight * v over the keys so far
  __shared__ float scratch[kAttnThreads];
  const unsigned tid = threadIdx.x;
  const int h = static_cast<int>(blockIdx.x / p.T);
  const int64_t t = blockIdx.x % p.T, pos = p.pos0 + t;
  const int64_t first = p.window > 0 && pos - p.window + 1 > 0 ? pos - p.window + 1 : 0;
  const int64_t kv_off = int64_t{h / p.group} * p.d;
  const float* q = p.q.row(t) + int64_t{h} * p.d;
  const float slope = p.slopes ? p.slopes[h] : 0.0f;
  for (int i = tid; i < p.d; i += blockDim.x) acc[i] = 0.0f;

  float m = -INFINITY, l = 0.0f;  // the same on every thread: both come from block reductions
  for (int64_t j0 = first; j0 <= pos; j0 += kAttnThreads) {
    const int64_t n = pos + 1 - j0 < kAttnThreads ? pos + 1 - j0 : kAttnThreads;  // keys in this chunk
    const float s = tid < n ? attention_score(p, q, kv_off, slope, j0 + tid) : -INFINITY;
    const float m_new = fmaxf(m, block_max(s, scratch));
    const float e = tid < n ? expf(s - m_new) : 0.0f;
    weight[tid] = e;
    const float rescale = expf(m - m_new);       // 0 on the first chunk (m = -inf)
    l = l * rescale + block_sum(e, scratch);     // block_sum's barriers also publish weight[]
    for (int i = tid; i < p.d; i += blockDim.x) {
      float a = acc[i] * rescale;
      for (int64_t jj = 0; jj < n; ++jj) a += weight[jj] * p.v.row(j0 + jj)[kv_off + i];
      acc[i] = a;
    }
    m = m_new;
    __syncthreads();  // weight[] is rewritten by the next chunk
  }
  float* o = p.out.row(t) + int64_t{h} * p.d;
  for (int i = tid; i < p.d; i += blockDim.x) o[i] = acc[i] / l;

  if (p.probs) {  // the trace wants the weights themselves: score every key again
    float* pr = p.probs + (int64_t{h} * p.T + t) * p.probs_len;
    for (int64_t j = tid; j < p.probs_len; j += blockDim.x)
      pr[j] = j >= first && j <= pos ? expf(attention_score(p, q, kv_off, slope, j) - m) / l : 0.0f;
  }
}

// ---- state-space (Mamba2) -------------------------------------------------------------------

// Depthwise causal convolution of x [T, C] with w [C, K], continuing from state [C, K] (the
// last K inputs seen), which it updates. out may be x.
// Launch: ceil(C / kThreads) blocks x kThreads threads; thread c walks channel c through time
// with the last K inputs in a register window, reading x[t, c] before writing out[t, c].
__global__ void conv1d_causal_kernel(Mat out, Mat x, Mat w, const float* bias, Mat state, int64_t T, int64_t C,
                                     int K) {
  const int64_t c = flat_index();
  if (c >= C) return;
  float window[kMaxConvWidth];
  float* st = state.row(c);
  const float* wc = w.row(c);
  for (int k = 0; k + 1 < K; ++k) window[k] = st[k + 1];
  for (int64_t t = 0; t < T; ++t) {
    window[K - 1] = x.row(t)[c];
    float acc = bias ? bias[c] : 0.0f;
    for (int k = 0; k < K; ++k) acc += wc[k] * window[k];
    out.row(t)[c] = acc;
    if (t + 1 < T)
      for (int k = 0; k + 1 < K; ++k) window[k] = window[k + 1];
  }
  for (int k = 0; k < K; ++k) st[k] = window[k];
}

struct SsmParams {
  Mat y, x, dt, B, C;        // y, x: [T, n_heads * P]; dt: [T, n_heads]; B, C: [T, n_groups * N]
  const float* A_log;        // [n_heads]
  const float* D;            // [n_heads]
  const float* dt_bias;      // [n_heads]
  float* state;              // [n_heads, P, N], contiguous
  int64_t T;
  int P, N, heads_per_group;
  float dt_min, dt_max;
};

// The Mamba2 recurrence for one (head h, channel p), token by token:
//   d = clamp(softplus(dt + dt_bias), dt_min, dt_max);  decay = exp(-exp(A_log) * d)
//   S[n] = decay * S[n] + d * x * B[n];  y = sum_n S[n] * C[n] + D * x
// Launch: n_heads * P blocks x (a power of two >= N) threads; block b is head b / P, channel
// b % P, and thread n keeps S[h, p, n] in a register for all T tokens.
__global__ void ssm_scan_kernel(SsmParams p) {
  __shared__ float scratch[kMaxThreads];
  const int h = static_cast<int>(blockIdx.x / p.P), ch = static_cast<int>(blockIdx.x % p.P);
  const int n = static_cast<int>(threadIdx.x);
  const int64_t g_off = int64_t{h / p.heads_per_group} * p.N, x_off = int64_t{h} * p.P + ch;
  float* S = p.state + (int64_t{h} * p.P + ch) * p.N;
  float s = n < p.N ? S[n] : 0.0f;
  const float A = expf(p.A_log[h]);
  for (int64_t t = 0; t < p.T; ++t) {
    const float raw = p.dt.row(t)[h] + p.dt_bias[h];
    const float soft = raw > 20.0f ? raw : log1pf(expf(raw));
    const float d = fminf(fmaxf(soft, p.dt_min), p.dt_max);
    const float decay = expf(-A * d);
    const float xv = p.x.row(t)[x_off];
    float contribution = 0.0f;
    if (n < p.N) {
      s = decay * s + d * xv * p.B.row(t)[g_off + n];
      contribution = s * p.C.row(t)[g_off + n];
    }
    const float yv = block_sum(contribution, scratch);  // every thread has read x before y is written
    if (n == 0) p.y.row(t)[x_off] = yv + p.D[h] * xv;
  }
  if (n < p.N) S[n] = s;
}

}  // namespace purellm::cuda
