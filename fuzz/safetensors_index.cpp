// Fuzz target: model.safetensors.index.json of a sharded model folder. A scratch folder holds
// two valid shards (tensors "a", "b" in shard-1, "c" in shard-2); the input becomes the index
// and the folder is opened through WeightFiles, as load_model opens one. An accepted index
// must name exactly tensors that exist, each in the shard that holds it.
#include <filesystem>

#include "fuzz/fuzz_util.hpp"
#include "tensor/safetensors.hpp"

using namespace purellm;
using nlohmann::json;

namespace {

std::string safetensors_bytes(const json& header, size_t data_bytes) {
  const std::string text = header.dump();
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[size_t(i)] = char((uint64_t(text.size()) >> (8 * i)) & 0xff);
  return bytes + text + std::string(data_bytes, '\x01');
}

std::string make_folder() {
  const std::string dir = fuzz::scratch_dir() + "/sharded";
  std::filesystem::create_directories(dir);
  const json shard1 = {{"a", {{"dtype", "F32"}, {"shape", {2, 2}}, {"data_offsets", {0, 16}}}},
                       {"b", {{"dtype", "BF16"}, {"shape", {4}}, {"data_offsets", {16, 24}}}}};
  const json shard2 = {{"c", {{"dtype", "F16"}, {"shape", {3}}, {"data_offsets", {0, 6}}}}};
  fuzz::write_file(dir + "/model-00001-of-00002.safetensors", safetensors_bytes(shard1, 24));
  fuzz::write_file(dir + "/model-00002-of-00002.safetensors", safetensors_bytes(shard2, 6));
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = make_folder();
  fuzz::write_file(dir + "/model.safetensors.index.json", fuzz::as_text(data, size));
  try {
    const WeightFiles weights = WeightFiles::open(dir, LoadMode::Mmap);
    for (const std::string& name : weights.names()) {
      FUZZ_CHECK(name == "a" || name == "b" || name == "c");
      FUZZ_CHECK(weights.get(name).nbytes() == weights.info(name).end - weights.info(name).begin);
    }
  } catch (const SafetensorsError&) {
  }
  return 0;
}
