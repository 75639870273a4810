#include "tensor/safetensors_writer.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace purellm {

void SafetensorsWriter::add(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                            const void* data) {
  if (name.empty() || name == "__metadata__")
    throw std::invalid_argument("safetensors writer: invalid tensor name \"" + name + "\"");
  if (has(name)) throw std::invalid_argument("safetensors writer: tensor \"" + name + "\" added twice");
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0) throw std::invalid_argument("safetensors writer: tensor \"" + name + "\" has a negative dim");
    numel *= d;
  }
  const DTypeTraits& tr = traits(dtype);
  const int64_t last = shape.empty() ? 1 : shape.back();
  if (last % tr.block_elems)
    throw std::invalid_argument("safetensors writer: tensor \"" + name + "\": last dim " + std::to_string(last) +
                                " is not a whole number of " + std::string(tr.name) + " blocks");
  const size_t bytes = dtype_bytes(dtype, numel);
  const char* p = static_cast<const char*>(data);
  tensors_.push_back({name, dtype, shape, std::vector<char>(p, p + bytes)});
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

bool SafetensorsWriter::has(const std::string& name) const {
  for (const Entry& e : tensors_)
    if (e.name == name) return true;
  return false;
}

void SafetensorsWriter::write(const std::string& path) const {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  uint64_t offset = 0;
  for (const Entry& e : tensors_) {
    header[e.name] = {{"dtype", std::string(dtype_name(e.dtype))},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + e.bytes.size()}}};
    offset += e.bytes.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data section starts 8-byte aligned
  const uint64_t n = text.size();
  char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xff);  // little-endian

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error(path + ": cannot create (" + std::strerror(errno) + ")");
  out.write(len, 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const Entry& e : tensors_) out.write(e.bytes.data(), static_cast<std::streamsize>(e.bytes.size()));
  out.flush();
  if (!out) throw std::runtime_error(path + ": write failed (" + std::strerror(errno) + ")");
}

}  // namespace purellm
