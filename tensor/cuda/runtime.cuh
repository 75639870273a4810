// The CUDA runtime and a kernel launch helper, or their CPU stand-ins.
//
// Built by nvcc this is <cuda_runtime.h> and the <<<>>> launch. A test that defines
// PURELLM_CUDA_EMULATOR gets tests/cuda_emulator.hpp instead, which provides the same names
// and runs the kernels on the CPU: the plug-in's code is then tested on machines without a GPU.
#pragma once

#ifdef PURELLM_CUDA_EMULATOR
#include "tests/cuda_emulator.hpp"
#else
#include <cuda_runtime.h>

namespace purellm::cuda {

// kernel<<<grid, block, 0, stream>>>(args...), written as a call so the emulator can supply
// its own.
template <class... Params, class... Args>
void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t stream, Args... args) {
  kernel<<<grid, block, 0, stream>>>(args...);
}

}  // namespace purellm::cuda
#endif
