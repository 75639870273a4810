// Fuzz target: the safetensors header parser (parse_safetensors_header), fed the JSON text a
// file holds after its 8-byte length. The data section is taken to be 1 GiB, so every real
// header parses fully and mutated offsets can still fall outside it.
// Checks, for every header that is accepted: tensors sorted by offset, no two overlapping,
// every range inside the data section and exactly shape x dtype bytes long.
#include <algorithm>

#include "fuzz/fuzz_util.hpp"
#include "tensor/safetensors.hpp"

using namespace purellm;

namespace {

constexpr uint64_t kDataBytes = uint64_t{1} << 30;

uint64_t expected_bytes(const TensorInfo& t) {
  uint64_t numel = 1;
  for (int64_t d : t.shape) numel *= uint64_t(d);  // the parser bounded the product
  const DTypeTraits& tr = traits(t.dtype);
  return numel / uint64_t(tr.block_elems) * uint64_t(tr.block_bytes);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<TensorInfo> tensors;
  nlohmann::json metadata;
  try {
    tensors = parse_safetensors_header(fuzz::as_text(data, size), kDataBytes, "fuzz.safetensors", &metadata);
  } catch (const SafetensorsError&) {
    return 0;
  }
  FUZZ_CHECK(metadata.is_null() || metadata.is_object());
  uint64_t reached = 0;
  for (const TensorInfo& t : tensors) {
    FUZZ_CHECK(t.begin <= t.end && t.end <= kDataBytes);
    FUZZ_CHECK(t.end - t.begin == expected_bytes(t));
    FUZZ_CHECK(t.shape.size() <= size_t(kMaxDims));
    if (t.begin == t.end) continue;
    FUZZ_CHECK(t.begin >= reached);  // sorted and disjoint
    reached = t.end;
  }
  return 0;
}
