// safetensors: the weight format of every Hugging Face checkpoint we load.
//
// File layout: 8-byte little-endian header length N, N bytes of JSON
//   { "name": {"dtype": "BF16", "shape": [64, 192], "data_offsets": [begin, end]}, ...,
//     "__metadata__": {...} }
// then the raw little-endian tensor bytes; offsets are relative to the end of the header.
//
// Everything in the header is validated before any tensor is used (length bound, JSON,
// dtype names, shape x dtype size == byte range, ranges inside the file, no overlaps), and
// every error names the file and the tensor. A model folder is either one
// `model.safetensors` or shards listed by `model.safetensors.index.json`; both are one
// WeightFiles, so model code never sees the difference.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "tensor/tensor.hpp"

namespace purellm {

// How weights reach memory.
//   Copy: read the whole file into 64-byte aligned anonymous memory with madvise(MADV_HUGEPAGE)
//         (on virtual machines decode from mapped files measured 2-5x slower).
//   Mmap: map the file read-only and use tensors in place. load_model always maps, and its
//         WeightLoader copies into anonymous memory the tensors it keeps as stored (unless
//         --mmap), so the copy holds only what the model uses, each weight once.
enum class LoadMode { Copy, Mmap };

class SafetensorsError : public std::runtime_error {
 public:
  enum class Kind {
    Io,             // cannot open / read / map the file, or a shard is missing
    Truncated,      // file shorter than 8 bytes, or header length past the end of file
    HeaderTooLarge, // header length above kMaxHeaderBytes
    BadJson,        // header is not valid JSON, or not an object of the expected form
    UnknownDtype,   // dtype name not in the dtype table
    BadShape,       // negative / too many dims / element count overflow
    SizeMismatch,   // shape x dtype size != data_offsets range
    OutOfRange,     // data range outside the file's data section
    Overlap,        // two tensors share bytes
    MissingTensor,  // a name the model asked for is not in any file
    BadIndex,       // model.safetensors.index.json malformed
  };
  // The message reads `<file>: tensor "<tensor>": <what>` (without the tensor part when
  // `tensor` is empty), so every error names the file and, where there is one, the tensor.
  SafetensorsError(Kind kind, const std::string& file, const std::string& tensor,
                   const std::string& what);
  Kind kind() const { return kind_; }
  const std::string& file() const { return file_; }
  const std::string& tensor() const { return tensor_; }

 private:
  Kind kind_;
  std::string file_, tensor_;
};

std::string_view kind_name(SafetensorsError::Kind kind);  // "Truncated", "Overlap", ...

// The safetensors format caps the header at 100 MB; so do we.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// No real checkpoint comes near this many tensors; a header that lists more is hostile or broken.
constexpr size_t kMaxTensors = 1'000'000;

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range relative to the start of the data section
};

// Parses and validates a header. `header` is the JSON text, `data_bytes` the size of the
// data section that follows it; `file` is used in error messages. Exposed for fuzzing.
// `max_tensors` caps the tensor count (tests lower it to reach the check cheaply).
// Returns the tensors in file order (by begin offset). Besides the plain dtypes, the block
// dtypes of the dtype table (Q8_0, Q4_0) are accepted when the last dim holds whole blocks.
std::vector<TensorInfo> parse_safetensors_header(std::string_view header, uint64_t data_bytes,
                                                 const std::string& file,
                                                 nlohmann::json* metadata = nullptr,
                                                 size_t max_tensors = kMaxTensors);

class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> open(const std::string& path, LoadMode mode);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const nlohmann::json& metadata() const { return metadata_; }
  const TensorInfo* find(std::string_view name) const;
  // A host view of the tensor's bytes (mapped or copied, per the load mode). Copy mode puts
  // every tensor at a 64-byte aligned address; Mmap mode keeps the file's alignment and its
  // memory is read-only. `info` must be one of tensors().
  Tensor tensor(const TensorInfo& info) const;
  uint64_t data_bytes() const { return data_bytes_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> by_name_;
  nlohmann::json metadata_;
  std::vector<char*> where_;  // per tensor (tensors_ order): its bytes in memory
  uint64_t data_bytes_ = 0;
  void* map_ = nullptr;       // Mmap mode: the whole file mapping
  size_t map_bytes_ = 0;
  AlignedBuffer copy_;        // Copy mode: every tensor, each in its own 64-byte aligned slot

  void map_file(int fd, uint64_t file_bytes, uint64_t data_start);
  void copy_tensors(int fd, uint64_t data_start);
};

// All weights of a model folder: model.safetensors, or the shards named by
// model.safetensors.index.json (or a single *.safetensors file path, or an index path);
// a folder holding both uses model.safetensors, as transformers does.
// Each shard is opened once; every name the index maps must be in its shard, and a name
// in two shards is an error (BadIndex).
class WeightFiles {
 public:
  static WeightFiles open(const std::string& path, LoadMode mode = LoadMode::Copy);

  bool has(std::string_view name) const;
  // Throws SafetensorsError(MissingTensor) naming the tensor and the folder.
  Tensor get(std::string_view name) const;
  const TensorInfo& info(std::string_view name) const;
  std::vector<std::string> names() const;  // sorted
  uint64_t total_bytes() const;            // sum of all tensor byte ranges
  const std::string& source() const { return source_; }
  LoadMode mode() const { return mode_; }
  // Mmap mode: drops the whole pages of tensor t (a view returned by get()) from this process's
  // memory once the caller has copied or converted it; they are read from the file again if
  // touched. Copy mode: nothing.
  void release(const Tensor& t) const;

 private:
  std::string source_;
  LoadMode mode_ = LoadMode::Copy;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::unordered_map<std::string, std::pair<const SafetensorsFile*, const TensorInfo*>> index_;

  void add_file(const std::string& path);
  void add_index(const std::string& index_path);
};

}  // namespace purellm
