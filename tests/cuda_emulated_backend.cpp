// The CUDA plug-in compiled as ordinary C++: runtime.cuh sees PURELLM_CUDA_EMULATOR and takes
// the CPU emulator (cuda_emulator.hpp) in place of the CUDA runtime, so every kernel and launch
// of cuda_backend.cu runs here exactly as written.
#define PURELLM_CUDA_EMULATOR 1
#include "tensor/cuda/cuda_backend.cu"
