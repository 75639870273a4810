// The machine's limits, measured. Read bandwidth: a read-only SIMD sum over a large buffer on
// all threads, each summing contiguous parts with the widest sum kernel of this CPU, as four
// sequential streams (a scalar loop, or one stream per core, would understate what the memory
// can do); the parts come from a WorkQueue, so a core that reads slower than the other takes
// less, as it does in the GEMV (there from SpeedSplit). F32 FMA throughput: every thread runs
// the widest FMA loop (Kernels::fma_loop) out of registers. Shared by bench_kernels and the
// bench app, which report decode GB/s and prefill GFLOP/s as shares of them.
#pragma once

#include <cstddef>

#include "tensor/tensor.hpp"

namespace purellm::cpu {

class BandwidthProbe {
 public:
  explicit BandwidthProbe(size_t bytes = size_t{1} << 30);  // 1 GiB: far past any L3
  size_t bytes() const { return buf_.size(); }
  // One pass over the buffer on `threads` threads; the sum keeps the reads alive.
  float sum(int threads) const;
  // Bytes per second of the best of `passes` timed passes on `threads` threads.
  double measure(int threads, int passes = 3) const;

 private:
  AlignedBuffer buf_;
};

// F32 flops per second on `threads` threads, the best of `passes` passes of about 20 ms.
double measure_fma_flops(int threads, int passes = 10);

}  // namespace purellm::cpu
