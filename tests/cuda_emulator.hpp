// A CPU stand-in for the CUDA runtime, so the CUDA plug-in's own code (tensor/cuda/*.cu*:
// shape checks, launch shapes, every kernel) runs and is tested on machines without a GPU.
//
// tests/cuda_emulated_backend.cpp defines PURELLM_CUDA_EMULATOR and includes
// tensor/cuda/cuda_backend.cu as ordinary C++; tensor/cuda/runtime.cuh then includes this
// header instead of <cuda_runtime.h>.
//
// How a launch runs: blocks one after another; the threads of a block are fibers on the
// calling thread (cuda_emulator.cpp), each running until it reaches __syncthreads() or
// returns. A barrier therefore really separates the phases of a block (every thread writes
// before any reads), and __shared__ (a static variable here) is shared by exactly the threads
// of one block. A thread that has returned counts as arrived at later barriers.
// Device memory is host memory, so AddressSanitizer catches a kernel reading out of bounds.
// What it cannot show: warp timing, races that a GPU's scheduling would expose, and nvcc's
// code generation. Those need a GPU (the `cuda` test label).
#pragma once

#include <math.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};
struct uint3 {
  unsigned x, y, z;
};

// Set by the emulator before each thread (fiber) runs.
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

// Suspends this thread until every thread of the block has reached a barrier or returned.
void __syncthreads();

// ---- the runtime API subset the plug-in uses ------------------------------------------------

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2, cudaErrorInsufficientDriver = 35 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3 };
using cudaStream_t = struct EmulatedStream*;

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  int major, minor;
  int integrated;
  int canMapHostMemory;
};

const char* cudaGetErrorString(cudaError_t err);
cudaError_t cudaGetLastError();
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaStreamCreate(cudaStream_t* stream);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaMalloc(void** ptr, size_t bytes);
cudaError_t cudaFree(void* ptr);
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream);
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width,
                              size_t height, cudaMemcpyKind kind, cudaStream_t stream);

namespace purellm::cuda {

// Runs body once per thread of every block of grid x block (see the top of this file).
void emulate_grid(dim3 grid, dim3 block, const std::function<void()>& body);

// The emulator's kernel<<<grid, block, 0, stream>>>(args...).
template <class... Params, class... Args>
void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t, Args... args) {
  emulate_grid(grid, block, [&] { kernel(args...); });
}

}  // namespace purellm::cuda
