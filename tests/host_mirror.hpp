// A Backend over host tensors that runs every op on a device backend: the operands are
// copied to the device (strides kept), the op runs there, and its outputs are copied back.
//
// It lets test bodies written for the CPU (random host tensors in, host tensors read back,
// test_ops.cpp) check a GPU backend unchanged. Operands that are the same host memory (an op
// in place) become the same device memory. Slow by design: tests only.
#pragma once

#include <memory>

#include "tensor/backend.hpp"

namespace purellm::test {

std::unique_ptr<Backend> host_mirror(Backend& device);

}  // namespace purellm::test
