#include "tensor/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

namespace purellm {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Kind = SafetensorsError::Kind;

// ---- errors ---------------------------------------------------------------------------------

namespace {

std::string error_message(const std::string& file, const std::string& tensor,
                          const std::string& what) {
  std::string m = file + ": ";
  if (!tensor.empty()) m += "tensor \"" + tensor + "\": ";
  return m + what;
}

}  // namespace

SafetensorsError::SafetensorsError(Kind kind, const std::string& file, const std::string& tensor,
                                   const std::string& what)
    : std::runtime_error(error_message(file, tensor, what)), kind_(kind), file_(file),
      tensor_(tensor) {}

std::string_view kind_name(Kind kind) {
  switch (kind) {
    case Kind::Io: return "Io";
    case Kind::Truncated: return "Truncated";
    case Kind::HeaderTooLarge: return "HeaderTooLarge";
    case Kind::BadJson: return "BadJson";
    case Kind::UnknownDtype: return "UnknownDtype";
    case Kind::BadShape: return "BadShape";
    case Kind::SizeMismatch: return "SizeMismatch";
    case Kind::OutOfRange: return "OutOfRange";
    case Kind::Overlap: return "Overlap";
    case Kind::MissingTensor: return "MissingTensor";
    case Kind::BadIndex: return "BadIndex";
  }
  return "?";
}

namespace {

// What an error is about: every validation step fails through here.
struct Context {
  const std::string& file;
  std::string tensor;

  [[noreturn]] void fail(Kind kind, const std::string& what) const {
    throw SafetensorsError(kind, file, tensor, what);
  }
};

// A JSON value for a message, cut short: a hostile header can hold huge values.
std::string brief(const json& value) {
  std::string s = value.dump();
  return s.size() <= 64 ? s : s.substr(0, 60) + "...";
}

std::string range_text(uint64_t begin, uint64_t end) {
  return "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + ")";
}

std::string describe(DType dtype, const std::vector<int64_t>& shape) {
  std::string s(dtype_name(dtype));
  s += "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// ---- header validation, one step per function -----------------------------------------------

constexpr std::string_view kMetadataKey = "__metadata__";

// Parses the JSON text, counting the top-level names as the parser meets them (a JSON object
// keeps only the last of two equal names) and stopping at more than `max_tensors` tensors.
json parse_json(std::string_view text, const std::string& file, size_t max_tensors,
                size_t& names_seen) {
  size_t tensors = 0;
  auto count_names = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth != 1 || event != json::parse_event_t::key) return true;
    ++names_seen;
    if (parsed.get_ref<const std::string&>() != kMetadataKey && ++tensors > max_tensors)
      Context{file, ""}.fail(Kind::HeaderTooLarge,
                             "header lists more than " + std::to_string(max_tensors) + " tensors");
    return true;
  };
  try {
    return json::parse(text, count_names);
  } catch (const json::exception& e) {
    Context{file, ""}.fail(Kind::BadJson, std::string("header is not valid JSON: ") + e.what());
  }
}

// More names seen than the object holds means a name came twice; only then find which.
void check_unique_names(std::string_view text, const json& root, size_t names_seen,
                        const std::string& file) {
  if (names_seen == root.size()) return;
  std::set<std::string> names;
  auto find_repeat = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth == 1 && event == json::parse_event_t::key &&
        !names.insert(parsed.get<std::string>()).second)
      Context{file, parsed.get<std::string>()}.fail(Kind::BadJson, "named twice in the header");
    return true;
  };
  [[maybe_unused]] const json reparsed = json::parse(text, find_repeat);  // throws at the repeat
}

void check_is_object(const json& header, const std::string& file) {
  if (!header.is_object())
    Context{file, ""}.fail(Kind::BadJson, "header is a JSON " + std::string(header.type_name()) +
                                              ", not an object of tensors");
}

// `__metadata__` is optional; when present it maps strings to strings.
void read_metadata(const json& value, const std::string& file, json* metadata) {
  bool ok = value.is_object();
  for (auto it = value.begin(); ok && it != value.end(); ++it) ok = it->is_string();
  if (!ok)
    Context{file, ""}.fail(Kind::BadJson,
                           "__metadata__ " + brief(value) + " is not an object of strings");
  if (metadata) *metadata = value;
}

const json& field(const json& entry, const char* key, const Context& at) {
  auto it = entry.find(key);
  if (it == entry.end()) at.fail(Kind::BadJson, std::string("has no \"") + key + "\" field");
  return *it;
}

DType parse_dtype(const json& entry, const Context& at) {
  const json& value = field(entry, "dtype", at);
  if (!value.is_string()) at.fail(Kind::BadJson, "dtype " + brief(value) + " is not a string");
  const auto& name = value.get_ref<const std::string&>();
  const std::optional<DType> dtype = dtype_from_name(name);
  if (!dtype) at.fail(Kind::UnknownDtype, "dtype \"" + name + "\" is not supported");
  return *dtype;
}

std::vector<int64_t> parse_shape(const json& entry, const Context& at) {
  const json& value = field(entry, "shape", at);
  if (!value.is_array()) at.fail(Kind::BadShape, "shape " + brief(value) + " is not an array");
  if (value.size() > kMaxDims)
    at.fail(Kind::BadShape, "shape " + brief(value) + " has " + std::to_string(value.size()) +
                                " dims, more than " + std::to_string(kMaxDims));
  std::vector<int64_t> shape;
  for (const json& dim : value) {
    // nlohmann stores non-negative integers as unsigned, negative ones as signed, and
    // integers beyond 64 bits as floating point.
    const bool fits = dim.is_number_unsigned() &&
                      dim.get<uint64_t>() <= uint64_t(std::numeric_limits<int64_t>::max());
    if (!fits)
      at.fail(Kind::BadShape, "shape " + brief(value) + ": dim " + brief(dim) +
                                  " is not an integer in [0, 2^63)");
    shape.push_back(dim.get<int64_t>());
  }
  return shape;
}

// Bytes the tensor takes. Strides are products of trailing dims, so even a tensor with a zero
// dim must keep the product of its other dims within int64.
uint64_t byte_size(DType dtype, const std::vector<int64_t>& shape, const Context& at) {
  uint64_t product = 1;
  bool has_zero = false;
  for (int64_t dim : shape) {
    has_zero |= dim == 0;
    if (dim != 0 && __builtin_mul_overflow(product, uint64_t(dim), &product))
      product = std::numeric_limits<uint64_t>::max();
  }
  if (product > uint64_t(std::numeric_limits<int64_t>::max()))
    at.fail(Kind::BadShape, describe(dtype, shape) + ": its dims multiply past 2^63");
  const uint64_t numel = has_zero ? 0 : product;

  const DTypeTraits& tr = traits(dtype);
  const auto block = uint64_t(tr.block_elems);
  if (block > 1 && (shape.empty() || uint64_t(shape.back()) % block != 0))
    at.fail(Kind::BadShape, describe(dtype, shape) + ": the last dim must be a multiple of the " +
                                std::to_string(block) + "-element block");
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(numel / block, uint64_t(tr.block_bytes), &bytes))
    at.fail(Kind::BadShape, describe(dtype, shape) + " takes more than 2^64 bytes");
  return bytes;
}

std::pair<uint64_t, uint64_t> parse_offsets(const json& entry, const Context& at) {
  const json& value = field(entry, "data_offsets", at);
  if (!value.is_array() || value.size() != 2 || !value[0].is_number_integer() ||
      !value[1].is_number_integer())
    at.fail(Kind::BadJson, "data_offsets " + brief(value) + " is not [begin, end]");
  if (!value[0].is_number_unsigned() || !value[1].is_number_unsigned())
    at.fail(Kind::OutOfRange, "data_offsets " + brief(value) +
                                  " are negative: a tensor cannot start before the data section");
  return {value[0].get<uint64_t>(), value[1].get<uint64_t>()};
}

void check_range(const TensorInfo& t, uint64_t data_bytes, const Context& at) {
  if (t.begin > t.end) at.fail(Kind::OutOfRange, range_text(t.begin, t.end) + " ends before it begins");
  if (t.end > data_bytes)
    at.fail(Kind::OutOfRange, range_text(t.begin, t.end) + " ends past the " +
                                  std::to_string(data_bytes) +
                                  "-byte data section (is the file truncated?)");
}

void check_size(const TensorInfo& t, uint64_t bytes, const Context& at) {
  if (t.end - t.begin != bytes)
    at.fail(Kind::SizeMismatch, range_text(t.begin, t.end) + " hold " +
                                    std::to_string(t.end - t.begin) + " bytes but " +
                                    describe(t.dtype, t.shape) + " needs " + std::to_string(bytes));
}

TensorInfo parse_entry(const std::string& name, const json& entry, uint64_t data_bytes,
                       const std::string& file) {
  const Context at{file, name};
  if (!entry.is_object())
    at.fail(Kind::BadJson, "entry " + brief(entry) + " is not an object {dtype, shape, data_offsets}");
  TensorInfo t;
  t.name = name;
  t.dtype = parse_dtype(entry, at);
  t.shape = parse_shape(entry, at);
  const uint64_t bytes = byte_size(t.dtype, t.shape, at);
  std::tie(t.begin, t.end) = parse_offsets(entry, at);
  check_range(t, data_bytes, at);
  check_size(t, bytes, at);
  return t;
}

// `tensors` sorted by begin offset. Empty tensors own no bytes and overlap nothing.
void check_no_overlap(const std::vector<TensorInfo>& tensors, const std::string& file) {
  const TensorInfo* previous = nullptr;  // the non-empty tensor reaching furthest so far
  for (const TensorInfo& t : tensors) {
    if (t.begin == t.end) continue;
    if (previous && t.begin < previous->end)
      Context{file, t.name}.fail(Kind::Overlap, range_text(t.begin, t.end) + " overlap tensor \"" +
                                                    previous->name + "\" at " +
                                                    range_text(previous->begin, previous->end));
    if (!previous || t.end > previous->end) previous = &t;
  }
}

}  // namespace

std::vector<TensorInfo> parse_safetensors_header(std::string_view header, uint64_t data_bytes,
                                                 const std::string& file, json* metadata,
                                                 size_t max_tensors) {
  size_t names_seen = 0;
  const json root = parse_json(header, file, max_tensors, names_seen);
  check_is_object(root, file);
  check_unique_names(header, root, names_seen, file);
  std::vector<TensorInfo> tensors;
  tensors.reserve(root.size());
  for (const auto& [name, entry] : root.items()) {
    if (name == kMetadataKey)
      read_metadata(entry, file, metadata);
    else
      tensors.push_back(parse_entry(name, entry, data_bytes, file));
  }
  std::sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  check_no_overlap(tensors, file);
  return tensors;
}

// ---- reading the file -----------------------------------------------------------------------

namespace {

std::string errno_text() { return std::strerror(errno); }

// An open file descriptor, closed on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

uint64_t regular_file_size(const Fd& f, const std::string& path) {
  struct stat st {};
  if (fstat(f.fd, &st) != 0) Context{path, ""}.fail(Kind::Io, "cannot stat: " + errno_text());
  if (!S_ISREG(st.st_mode)) Context{path, ""}.fail(Kind::Io, "not a regular file");
  return uint64_t(st.st_size);
}

// Reads exactly `bytes` at `offset` in large chunks; a short read means the file shrank.
void read_exact(int fd, char* out, uint64_t bytes, uint64_t offset, const std::string& path) {
  constexpr uint64_t kChunk = uint64_t{64} << 20;
  while (bytes > 0) {
    const ssize_t n = pread(fd, out, std::min(bytes, kChunk), off_t(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) Context{path, ""}.fail(Kind::Io, "read failed at byte " + std::to_string(offset) +
                                                    ": " + errno_text());
    if (n == 0)
      Context{path, ""}.fail(Kind::Truncated, "file ended at byte " + std::to_string(offset) +
                                                  " while reading (did it shrink?)");
    out += n;
    bytes -= uint64_t(n);
    offset += uint64_t(n);
  }
}

// The 8-byte little-endian header length, checked against the file size and the cap.
uint64_t read_header_length(const Fd& f, uint64_t file_bytes, const std::string& path) {
  const Context at{path, ""};
  if (file_bytes < 8)
    at.fail(Kind::Truncated, "file is " + std::to_string(file_bytes) +
                                 " bytes, too short for the 8-byte header length");
  unsigned char raw[8];
  read_exact(f.fd, reinterpret_cast<char*>(raw), 8, 0, path);
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | raw[i];
  if (length > kMaxHeaderBytes)
    at.fail(Kind::HeaderTooLarge, "header length " + std::to_string(length) + " is above the " +
                                      std::to_string(kMaxHeaderBytes) + "-byte limit");
  if (length > file_bytes - 8)
    at.fail(Kind::Truncated, "header length " + std::to_string(length) + " runs past the end of the " +
                                 std::to_string(file_bytes) + "-byte file");
  return length;
}

}  // namespace

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path, LoadMode mode) {
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) Context{path, ""}.fail(Kind::Io, "cannot open: " + errno_text());
  const uint64_t file_bytes = regular_file_size(f, path);
  const uint64_t header_bytes = read_header_length(f, file_bytes, path);
  std::string header(header_bytes, '\0');
  read_exact(f.fd, header.data(), header_bytes, 8, path);

  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->data_bytes_ = file_bytes - 8 - header_bytes;
  file->tensors_ = parse_safetensors_header(header, file->data_bytes_, path, &file->metadata_);
  for (size_t i = 0; i < file->tensors_.size(); ++i) file->by_name_[file->tensors_[i].name] = i;
  if (mode == LoadMode::Mmap)
    file->map_file(f.fd, file_bytes, 8 + header_bytes);
  else
    file->copy_tensors(f.fd, 8 + header_bytes);
  return file;
}

void SafetensorsFile::map_file(int fd, uint64_t file_bytes, uint64_t data_start) {
  void* map = mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  if (map == MAP_FAILED) Context{path_, ""}.fail(Kind::Io, "cannot map: " + errno_text());
  map_ = map;
  map_bytes_ = file_bytes;
  char* data = static_cast<char*>(map) + data_start;
  for (const TensorInfo& t : tensors_) where_.push_back(data + t.begin);
}

// Each tensor gets its own 64-byte aligned slot, whatever the file's padding, so kernels see
// aligned rows in the default mode; gaps between tensors in the file are not copied.
void SafetensorsFile::copy_tensors(int fd, uint64_t data_start) {
  constexpr uint64_t kAlign = AlignedBuffer::kAlign;
  std::vector<uint64_t> slot;
  uint64_t total = 0;
  for (const TensorInfo& t : tensors_) {
    total = (total + kAlign - 1) / kAlign * kAlign;
    slot.push_back(total);
    total += t.end - t.begin;
  }
  copy_ = AlignedBuffer(total, /*huge_pages=*/true);
  char* base = copy_.as<char>();  // null when every tensor is empty
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const TensorInfo& t = tensors_[i];
    where_.push_back(base ? base + slot[i] : nullptr);
    read_exact(fd, where_.back(), t.end - t.begin, data_start + t.begin, path_);
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) munmap(map_, map_bytes_);
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

Tensor SafetensorsFile::tensor(const TensorInfo& info) const {
  auto it = by_name_.find(info.name);
  if (it == by_name_.end() || &tensors_[it->second] != &info)
    throw std::invalid_argument(path_ + ": tensor \"" + info.name + "\" is not one of this file's");
  Tensor t;
  t.dtype = info.dtype;
  t.ndim = int(info.shape.size());
  t.data = where_[it->second];
  int64_t stride = 1;  // cannot overflow: byte_size() bounded the products of the dims
  for (int d = t.ndim - 1; d >= 0; --d) {
    const auto i = size_t(d);
    t.shape[i] = info.shape[i];
    t.stride[i] = stride;
    stride *= info.shape[i];
  }
  return t;
}

// ---- a model folder ---------------------------------------------------------------------------

namespace {

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

json read_index_json(const std::string& path) {
  const Context at{path, ""};
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) at.fail(Kind::Io, "missing or not a regular file");
  if (fs::file_size(path, ec) > kMaxHeaderBytes)
    at.fail(Kind::BadIndex, "index is larger than " + std::to_string(kMaxHeaderBytes) + " bytes");
  std::ifstream in(path, std::ios::binary);
  if (!in) at.fail(Kind::Io, "cannot open: " + errno_text());
  std::stringstream text;
  text << in.rdbuf();
  try {
    return json::parse(text.str());
  } catch (const json::exception& e) {
    at.fail(Kind::BadIndex, std::string("index is not valid JSON: ") + e.what());
  }
}

// weight_map: tensor name -> shard file name (a plain name in the index's folder).
std::map<std::string, std::string> read_weight_map(const std::string& path) {
  const json index = read_index_json(path);
  const Context at{path, ""};
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    at.fail(Kind::BadIndex, "index has no \"weight_map\" object");
  std::map<std::string, std::string> weight_map;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    if (!shard.is_string() || shard.get_ref<const std::string&>().empty() ||
        shard.get_ref<const std::string&>().find('/') != std::string::npos)
      Context{path, name}.fail(Kind::BadIndex,
                               "weight_map names shard " + brief(shard) + ", not a file name");
    weight_map[name] = shard.get<std::string>();
  }
  if (weight_map.empty()) at.fail(Kind::BadIndex, "weight_map is empty");
  return weight_map;
}

}  // namespace

WeightFiles WeightFiles::open(const std::string& path, LoadMode mode) {
  WeightFiles w;
  w.source_ = path;
  w.mode_ = mode;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path dir(path);
    if (fs::exists(dir / kSingleFile, ec))
      w.add_file((dir / kSingleFile).string());
    else if (fs::exists(dir / kIndexFile, ec))
      w.add_index((dir / kIndexFile).string());
    else
      Context{path, ""}.fail(Kind::Io, std::string("folder has neither ") + kSingleFile + " nor " +
                                           kIndexFile);
  } else if (path.ends_with(".index.json")) {
    w.add_index(path);
  } else {
    w.add_file(path);
  }
  return w;
}

void WeightFiles::add_file(const std::string& path) {
  files_.push_back(SafetensorsFile::open(path, mode_));
  const SafetensorsFile* file = files_.back().get();
  for (const TensorInfo& t : file->tensors()) {
    auto [it, added] = index_.try_emplace(t.name, file, &t);
    if (!added)
      Context{path, t.name}.fail(Kind::BadIndex,
                                 "also stored in " + it->second.first->path() + "; names must be unique");
  }
}

void WeightFiles::add_index(const std::string& index_path) {
  const std::map<std::string, std::string> weight_map = read_weight_map(index_path);
  const fs::path dir = fs::path(index_path).parent_path();

  std::map<std::string, std::string> shards;  // shard name -> first tensor it should hold
  for (const auto& [name, shard] : weight_map) shards.try_emplace(shard, name);
  for (const auto& [shard, first_name] : shards) {
    const std::string shard_path = (dir / shard).string();
    std::error_code ec;
    if (!fs::exists(shard_path, ec))
      Context{index_path, first_name}.fail(Kind::Io, "weight_map names shard \"" + shard +
                                                          "\", which does not exist (" +
                                                          shard_path + ")");
    add_file(shard_path);
  }

  for (const auto& [name, shard] : weight_map) {
    auto it = index_.find(name);
    const std::string shard_path = (dir / shard).string();
    if (it == index_.end() || it->second.first->path() != shard_path)
      Context{index_path, name}.fail(Kind::BadIndex, "weight_map puts it in \"" + shard +
                                                         "\", which has no tensor of that name");
  }
}

bool WeightFiles::has(std::string_view name) const {
  return index_.count(std::string(name)) != 0;
}

namespace {

[[noreturn]] void fail_missing(const std::string& source, std::string_view name, size_t count) {
  Context{source, std::string(name)}.fail(
      Kind::MissingTensor, "not found among the " + std::to_string(count) + " tensors");
}

}  // namespace

const TensorInfo& WeightFiles::info(std::string_view name) const {
  auto it = index_.find(std::string(name));
  if (it == index_.end()) fail_missing(source_, name, index_.size());
  return *it->second.second;
}

Tensor WeightFiles::get(std::string_view name) const {
  auto it = index_.find(std::string(name));
  if (it == index_.end()) fail_missing(source_, name, index_.size());
  return it->second.first->tensor(*it->second.second);
}

void WeightFiles::release(const Tensor& t) const {
  if (mode_ != LoadMode::Mmap || !t.data) return;
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<uintptr_t>(t.data);
  const uintptr_t first = (begin + page - 1) / page * page, last = (begin + t.nbytes()) / page * page;
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

std::vector<std::string> WeightFiles::names() const {
  std::vector<std::string> names;
  names.reserve(index_.size());
  for (const auto& entry : index_) names.push_back(entry.first);
  std::sort(names.begin(), names.end());
  return names;
}

uint64_t WeightFiles::total_bytes() const {
  uint64_t total = 0;
  for (const auto& entry : index_) total += entry.second.second->end - entry.second.second->begin;
  return total;
}

}  // namespace purellm
