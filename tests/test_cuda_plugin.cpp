// The plug-in this binary was built with loads through the --device loader and either gives a
// working backend or says why it cannot run (no driver, no GPU). It is never "not found", so
// on a machine without a GPU this still proves the library loads and its entry points work.
#include <gtest/gtest.h>

#include "tests/device_under_test.hpp"

using namespace purellm;

TEST(CudaPlugin, LoadsAndRunsOrSaysWhyNot) {
  std::string why;
  Backend* backend = test::device_under_test(&why);
  if (backend) {
    EXPECT_EQ(backend->device(), Device::CUDA);
    EXPECT_EQ(backend->name().rfind("cuda (", 0), 0u) << backend->name();
    return;
  }
  EXPECT_EQ(why.find("not found"), std::string::npos) << why;
  EXPECT_NE(why.find("GPU"), std::string::npos) << why;
  EXPECT_NE(why.find("libpurellm_cuda.so"), std::string::npos) << why;
}
