// Mamba2's ops on the CPU: the causal depthwise convolution and the selective scan.
#include <algorithm>
#include <cmath>

#include "tensor/cpu/ops.hpp"
#include "tensor/cpu/reference.hpp"

namespace purellm::cpu::fast {

namespace {

// One token (decode): each channel's K taps against its last K-1 inputs (the state) and x,
// then the state moves up by one. At T = 1 the general road's transposes cost far more than
// the arithmetic (Granite 350m, 1792 channels: 60-95 us a layer, against 3-4 here). kTaps = K
// when known at compile time (Mamba2's 4: the tap loop unrolls), 0 otherwise.
template <int kTaps>
void conv1d_one_token(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias,
                      const Tensor& state) {
  const int64_t C = x.cols(), K = kTaps ? kTaps : w.cols(), ldw = w.row_stride(), lds = state.row_stride();
  const float* xv = x.row<float>(0);
  const float* b = bias.empty() ? nullptr : bias.ptr<float>();
  float* ov = out.row<float>(0);
  for (int64_t c = 0; c < C; ++c) {
    const float* wc = w.ptr<float>() + c * ldw;
    float* s = state.ptr<float>() + c * lds;
    const float in = xv[c];  // read before out[c] is written: out may alias x
    float acc = b ? b[c] : 0.0f;
    for (int64_t j = 0; j + 1 < K; ++j) {
      acc += wc[j] * s[j + 1];
      s[j] = s[j + 1];
    }
    s[K - 1] = in;
    ov[c] = acc + wc[K - 1] * in;
  }
}

}  // namespace

// Channels are the contiguous axis of x and out, but the taps of w and state run along each
// channel. So (for more than one token) w and the old state are first transposed into
// tap-major rows [K, C]; then every output row is bias + sum_k w_k * (input row t - (K-1) + k),
// a few whole-row multiply-adds. Output rows are produced last first, so out may alias x.
void conv1d_causal(const Kernels& k, Scratch& s, const Tensor& out, const Tensor& x, const Tensor& w,
                   const Tensor& bias, const Tensor& state) {
  ref::check_conv1d(out, x, w, bias, state);
  const int64_t T = x.rows(), C = x.cols(), K = w.cols();
  if (T == 1)
    return K == 4 ? conv1d_one_token<4>(out, x, w, bias, state) : conv1d_one_token<0>(out, x, w, bias, state);
  const int64_t ldw = w.row_stride(), lds = state.row_stride(), ldx = x.row_stride();
  float* wt = s.shared(static_cast<size_t>(2 * K * C));  // [K, C] taps, then [K, C] old state
  float* hist = wt + K * C;
  const float* wp = w.ptr<float>();
  float* sp = state.ptr<float>();
  for (int64_t c = 0; c < C; ++c)
    for (int64_t j = 0; j < K; ++j) {
      wt[j * C + c] = wp[c * ldw + j];
      hist[j * C + c] = sp[c * lds + j];
    }
  // Input row i of the sequence history ++ x: i < K-1 is old state entry i + 1.
  const float* x0 = x.row<float>(0);
  auto input = [&](int64_t i) { return i < K - 1 ? hist + (i + 1) * C : x0 + (i - (K - 1)) * ldx; };
  for (int64_t c = 0; c < C; ++c)  // the last K inputs become the new state (before out overwrites x)
    for (int64_t j = 0; j < K; ++j) sp[c * lds + j] = input(T - 1 + j)[c];

  constexpr int64_t kChunk = 512;  // channels per work item
  const int64_t chunks = (C + kChunk - 1) / kChunk;
  const int nt = static_cast<int>(std::min<int64_t>(threads_for(T * C * K), chunks));
  s.reserve(nt, kChunk);
  parallel_for(chunks, T * C * K, [&](int64_t chunk) {
    const int64_t c0 = chunk * kChunk, n = std::min(kChunk, C - c0);
    float* acc = s.thread(omp_get_thread_num());
    for (int64_t t = T - 1; t >= 0; --t) {
      if (bias.empty())
        std::fill(acc, acc + n, 0.0f);
      else
        std::copy(bias.ptr<float>() + c0, bias.ptr<float>() + c0 + n, acc);
      for (int64_t j = 0; j < K; ++j) k.mul_add(acc, wt + j * C + c0, input(t + j) + c0, n);
      std::copy(acc, acc + n, out.row<float>(t) + c0);
    }
  });
}

namespace {

float softplus(float v) { return v > 20.0f ? v : std::log1p(std::exp(v)); }

}  // namespace

// Heads are independent: threads take whole heads and run the recurrence over T tokens.
void ssm_scan(const Kernels& k, const Tensor& y, const Tensor& x, const Tensor& dt, const Tensor& B,
              const Tensor& C, const Tensor& A_log, const Tensor& D, const Tensor& dt_bias,
              const Tensor& state, const SsmArgs& a) {
  ref::check_ssm(y, x, dt, B, C, A_log, D, dt_bias, state, a);
  const int64_t T = x.rows(), P = a.head_dim, N = a.d_state;
  const int heads_per_group = a.n_heads / a.n_groups;
  parallel_for(a.n_heads, T * a.n_heads * P * N, [&](int64_t h) {
    const int64_t g = h / heads_per_group;
    const float A = -std::exp(A_log.ptr<float>()[h]);
    for (int64_t t = 0; t < T; ++t) {
      SsmStep st{};
      st.dt = std::clamp(softplus(dt.row<float>(t)[h] + dt_bias.ptr<float>()[h]), a.dt_min, a.dt_max);
      st.decay = std::exp(A * st.dt);
      st.D = D.ptr<float>()[h];
      st.S = state.ptr<float>() + h * P * N;
      st.y = y.row<float>(t) + h * P;
      st.x = x.row<float>(t) + h * P;
      st.B = B.row<float>(t) + g * N;
      st.C = C.row<float>(t) + g * N;
      st.P = P;
      st.N = N;
      k.ssm_step(st);
    }
  });
}

}  // namespace purellm::cpu::fast
