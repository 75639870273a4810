#include "tensor/cpu/bandwidth.hpp"

#include <omp.h>

#include <algorithm>

#include "tensor/cpu/kernels.hpp"
#include "tensor/cpu/ops.hpp"

namespace purellm::cpu {

BandwidthProbe::BandwidthProbe(size_t bytes) : buf_(bytes, /*huge_pages=*/true) {
  float* p = buf_.as<float>();
  const auto n = static_cast<int64_t>(bytes / sizeof(float));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(i & 1023);
}

float BandwidthProbe::sum(int threads) const {
  const Kernels* k = kernels_for(default_isa());
  const float* p = buf_.as<const float>();
  const auto n = static_cast<int64_t>(buf_.size() / sizeof(float));
  float s = 0;
  WorkQueue parts(n, 1024);  // a slower core reads less, as in the GEMV (there from SpeedSplit)
#pragma omp parallel num_threads(threads) reduction(+ : s)
  parts.for_each([&](Range r) {
    if (k) {
      s += k->sum(p + r.begin, r.end - r.begin);
    } else {
      for (int64_t i = r.begin; i < r.end; ++i) s += p[i];
    }
  });
  return s;
}

double BandwidthProbe::measure(int threads, int passes) const {
  double best = 0;
  volatile float sink = 0;
  for (int rep = 0; rep < passes; ++rep) {
    const double t0 = omp_get_wtime();
    sink = sink + sum(threads);
    best = std::max(best, static_cast<double>(buf_.size()) / (omp_get_wtime() - t0));
  }
  return best;
}

double measure_fma_flops(int threads, int passes) {
  const Kernels* k = kernels_for(default_isa());
  if (!k) return 0.0;  // the scalar reference (PURELLM_ISA=scalar) has no kernel table
  constexpr int64_t kIters = int64_t{1} << 21;  // 2M steps: ~10-40 ms on one core
  double best = 0;
  volatile float sink = 0;
  for (int rep = 0; rep < passes; ++rep) {
    double flops = 0;
    float s = 0;
    const double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+ : flops, s)
    {
      float one = 0;
      flops += k->fma_loop(kIters, &one);
      s += one;
    }
    best = std::max(best, flops / (omp_get_wtime() - t0));
    sink = sink + s;
  }
  return best;
}

}  // namespace purellm::cpu
