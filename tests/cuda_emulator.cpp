#include "tests/cuda_emulator.hpp"

#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define PURELLM_ASAN_FIBERS 1
#endif
// The stack-switching functions are not instrumented: AddressSanitizer would otherwise treat
// each switch as a longjmp out of the stack and clear its shadow (a system call and a memset
// per barrier). Every frame stays live across a switch, so there is nothing to clear; the
// switch itself is announced with __sanitizer_start/finish_switch_fiber.
#define PURELLM_NO_ASAN __attribute__((no_sanitize_address))

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace {

constexpr size_t kStackBytes = 256 * 1024;  // per emulated thread; kernels keep little on the stack

// The buffer of __builtin_setjmp: frame pointer, resume address, stack pointer (and spares).
using JumpBuffer = void* [5];

// One emulated thread. A fiber enters its stack once (ucontext) and from then on switches with
// __builtin_setjmp/__builtin_longjmp: they save three words and make no system call
// (swapcontext saves the signal mask), so a barrier costs nanoseconds.
struct Fiber {
  std::unique_ptr<char[]> stack;
  JumpBuffer resume;   // where the fiber continues: after its barrier, or at the top of its loop
  bool started = false;
  bool done = true;    // finished the current block (or never ran)
  void* asan_fake_stack = nullptr;
};

JumpBuffer g_scheduler;                       // where a fiber goes back to
std::vector<Fiber> g_fibers;                  // one per thread of the largest block so far
size_t g_current = 0;                         // the fiber running now
const std::function<void()>* g_body = nullptr;
const void* g_scheduler_stack = nullptr;      // the scheduler's stack, for AddressSanitizer
size_t g_scheduler_stack_size = 0;
void* g_scheduler_fake_stack = nullptr;

// Tells AddressSanitizer that the next instruction runs on another stack (no-op without it).
void leaving_stack(void** fake_stack, const void* next_stack, size_t next_size) {
#ifdef PURELLM_ASAN_FIBERS
  __sanitizer_start_switch_fiber(fake_stack, next_stack, next_size);
#else
  (void)fake_stack, (void)next_stack, (void)next_size;
#endif
}
void arrived_on_stack(void* fake_stack) {
#ifdef PURELLM_ASAN_FIBERS
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#else
  (void)fake_stack;
#endif
}

// Continues at the __builtin_setjmp that filled `to`. A function of its own: GCC does not allow
// __builtin_longjmp in the function that calls the matching __builtin_setjmp.
[[gnu::noinline, noreturn]] PURELLM_NO_ASAN void jump_to(void** to) { __builtin_longjmp(to, 1); }

// Back to the scheduler; returns when the scheduler resumes this fiber.
PURELLM_NO_ASAN void yield_to_scheduler() {
  Fiber& f = g_fibers[g_current];
  if (__builtin_setjmp(f.resume) == 0) {
    leaving_stack(&f.asan_fake_stack, g_scheduler_stack, g_scheduler_stack_size);
    jump_to(g_scheduler);
  }
  arrived_on_stack(g_fibers[g_current].asan_fake_stack);
}

// A fiber's whole life: run the body for each block it is given, parking in between.
void fiber_main() {
#ifdef PURELLM_ASAN_FIBERS
  __sanitizer_finish_switch_fiber(nullptr, &g_scheduler_stack, &g_scheduler_stack_size);
#endif
  for (;;) {
    yield_to_scheduler();  // parked until the scheduler starts the next block
    (*g_body)();
    g_fibers[g_current].done = true;
  }
}

// Resumes fiber i until it reaches a barrier, finishes the block, or (first time) parks.
PURELLM_NO_ASAN void resume(size_t i) {
  Fiber& f = g_fibers[i];
  g_current = i;
  if (__builtin_setjmp(g_scheduler) == 0) {
    leaving_stack(&g_scheduler_fake_stack, f.stack.get(), kStackBytes);
    if (f.started) jump_to(f.resume);
    f.started = true;
    static ucontext_t start;  // only to enter the new stack, once per fiber
    getcontext(&start);
    start.uc_stack.ss_sp = f.stack.get();
    start.uc_stack.ss_size = kStackBytes;
    start.uc_link = nullptr;
    makecontext(&start, fiber_main, 0);
    setcontext(&start);
  }
  arrived_on_stack(g_scheduler_fake_stack);
}

// Runs every thread of the current block until it returns, one barrier phase at a time.
void run_block(unsigned threads) {
  for (size_t i = 0; i < threads; ++i) {
    if (!g_fibers[i].started) resume(i);  // a new fiber runs up to its parking point
    g_fibers[i].done = false;
  }
  for (bool running = true; running;) {
    running = false;
    for (size_t i = 0; i < threads; ++i) {
      if (g_fibers[i].done) continue;
      threadIdx = {static_cast<unsigned>(i % blockDim.x), static_cast<unsigned>(i / blockDim.x % blockDim.y),
                   static_cast<unsigned>(i / (blockDim.x * blockDim.y))};
      resume(i);
      running |= !g_fibers[i].done;
    }
  }
}

}  // namespace

void __syncthreads() { yield_to_scheduler(); }

namespace purellm::cuda {

void emulate_grid(dim3 grid, dim3 block, const std::function<void()>& body) {
  const unsigned threads = block.x * block.y * block.z;
  if (threads == 0 || threads > 1024) throw std::invalid_argument("emulated launch: bad block size");
  while (g_fibers.size() < threads) {
    g_fibers.emplace_back();
    g_fibers.back().stack = std::make_unique<char[]>(kStackBytes);
  }
  g_body = &body;
  gridDim = grid;
  blockDim = block;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        blockIdx = {x, y, z};
        run_block(threads);
      }
}

}  // namespace purellm::cuda

// ---- runtime API ----------------------------------------------------------------------------

const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
  }
  return "unknown error";
}

cudaError_t cudaGetLastError() { return cudaSuccess; }
cudaError_t cudaGetDeviceCount(int* count) { return *count = 1, cudaSuccess; }
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidValue; }

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int) {
  *prop = {};
  std::snprintf(prop->name, sizeof prop->name, "CPU emulator");
  prop->totalGlobalMem = size_t{1} << 30;
  prop->major = 8;
  prop->minor = 7;
  return cudaSuccess;
}

// Work is done at launch time, so streams only exist to be passed around.
cudaError_t cudaStreamCreate(cudaStream_t* stream) { return *stream = nullptr, cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  *ptr = std::malloc(bytes);
  return *ptr ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaFree(void* ptr) {
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t) {
  std::memset(ptr, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t) {
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width,
                              size_t height, cudaMemcpyKind, cudaStream_t) {
  if (width > dpitch || width > spitch) return cudaErrorInvalidValue;
  for (size_t r = 0; r < height; ++r)
    std::memcpy(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch, width);
  return cudaSuccess;
}
