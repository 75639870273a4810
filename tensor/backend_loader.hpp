// Backends by device name, for `--device cpu|cuda`.
//
// The CPU backend is built in. The CUDA backend is a plug-in, libpurellm_cuda.so, built only
// with -DPURELLM_CUDA=ON and loaded with dlopen the first time it is asked for, so no program
// links against CUDA and every program runs on a machine without it.
//
// A backend plug-in exports two C functions:
//   int purellm_plugin_abi(void);                       returns kPluginAbi it was built with
//   purellm::Backend* purellm_create_backend(char* error, size_t error_size);
//     a new backend, or null with the reason written to error (no GPU, driver too old, ...)
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tensor/backend.hpp"

namespace purellm {

// Changes whenever backend.hpp or tensor.hpp change in a way that breaks a built plug-in.
constexpr int kPluginAbi = 1;

// "cpu" or "cuda". The backend lives until the program exits. Throws std::runtime_error
// saying what is missing (plug-in not built, no driver, no GPU) and how to fix it.
Backend& backend_for_device(std::string_view device);

// The paths tried for the CUDA plug-in, in order: $PURELLM_CUDA_PLUGIN alone when set; else
// next to the executable, in ../lib beside its folder, then the plain name (LD_LIBRARY_PATH
// and the system folders).
std::vector<std::string> cuda_plugin_candidates();

}  // namespace purellm
