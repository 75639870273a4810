// Writing safetensors files: traces of a forward pass (`ask --trace`), read back by our own
// loader, by NumPy in the notebooks, or by the `safetensors` Python package.
//
//   SafetensorsWriter w;
//   w.add("layer_out.3", DType::F32, {T, D}, data);   // bytes copied now
//   w.set_metadata("model", "stories260K");
//   w.write("trace.safetensors");
//
// The file is the standard layout (see safetensors.hpp): 8-byte little-endian header length,
// a JSON header padded with spaces to a multiple of 8, then the tensors back to back in the
// order they were added.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tensor/dtype.hpp"

namespace purellm {

class SafetensorsWriter {
 public:
  // Copies dtype_bytes(dtype, prod(shape)) bytes from `data`. Throws on a repeated or empty
  // name, a reserved name (__metadata__) or a shape that does not hold whole blocks.
  void add(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data);
  void set_metadata(const std::string& key, const std::string& value);
  bool has(const std::string& name) const;
  size_t size() const { return tensors_.size(); }
  // Writes the file (replacing it); throws naming the path when it cannot.
  void write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<char> bytes;
  };
  std::vector<Entry> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace purellm
