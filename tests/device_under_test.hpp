// The device backend a device test binary checks: the CUDA plug-in on a GPU (test_cuda,
// device_cuda_plugin.cpp) or the plug-in's own code on the CPU emulator (test_cuda_emulated,
// device_cuda_emulated.cpp). Each binary links exactly one of the two.
#pragma once

#include <string>

#include "tensor/backend.hpp"

namespace purellm::test {

// The backend (alive until exit), or null with the reason it is not available in *why.
Backend* device_under_test(std::string* why);

}  // namespace purellm::test
