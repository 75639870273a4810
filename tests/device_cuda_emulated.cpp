// test_cuda_emulated: the plug-in's code built as C++ against tests/cuda_emulator.hpp
// (cuda_emulated_backend.cpp), created through the plug-in's own entry point.
#include <cstddef>

#include "tests/device_under_test.hpp"

extern "C" purellm::Backend* purellm_create_backend(char* error, size_t error_size);

namespace purellm::test {

Backend* device_under_test(std::string* why) {
  static char error[512] = "";
  static Backend* backend = purellm_create_backend(error, sizeof error);
  if (!backend) *why = error;
  return backend;
}

}  // namespace purellm::test
