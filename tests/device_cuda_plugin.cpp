// test_cuda: the real plug-in (libpurellm_cuda.so) through the same loader `--device cuda` uses.
// Without the plug-in, the NVIDIA driver or a GPU, the tests skip and print the loader's reason.
#include "tensor/backend_loader.hpp"
#include "tests/device_under_test.hpp"

namespace purellm::test {

Backend* device_under_test(std::string* why) {
  try {
    return &backend_for_device("cuda");
  } catch (const std::exception& e) {
    *why = e.what();
    return nullptr;
  }
}

}  // namespace purellm::test
