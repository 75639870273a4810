#include "models/layers.hpp"

#include "tensor/quant.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "tensor/cpu/cpu_backend.hpp"
#include "tensor/cpu/reference.hpp"

namespace purellm {

namespace {

// The row conversions of a loader: F16 goes through the CPU backend's SIMD conversions, which
// give the same values as the scalar f16_to_f32 / f32_to_f16 (a NaN stays a NaN) and took a
// TinyLlama BF16 --dtype f16 load from 4.1-4.4 s to 0.6-1.1 s.
void read_row(const Tensor& w, int64_t r, float* dst) {
  if (w.dtype != DType::F16) return ref::weight_row_f32(w, r, dst);
  const auto id = static_cast<int32_t>(r);
  cpu_backend().embed(Tensor::contiguous(dst, DType::F32, {1, w.cols()}), w, std::span<const int32_t>(&id, 1));
}

void convert_row(DType to, const float* src, void* dst, int64_t n) {
  if (to != DType::F16) return convert_row_from_f32(to, src, dst, n);
  cpu_backend().copy(Tensor::contiguous(dst, to, {1, n}),
                     Tensor::contiguous(const_cast<float*>(src), DType::F32, {1, n}));
}

}  // namespace

// ---- ConfigReader ----------------------------------------------------------------------

ConfigReader::ConfigReader(const nlohmann::json& config, std::string where)
    : config_(config), where_(std::move(where)) {
  if (!config_.is_object()) throw std::runtime_error(where_ + ": expected a JSON object");
}

void ConfigReader::fail(std::string_view key, const std::string& why) const {
  throw std::runtime_error(where_ + ": \"" + std::string(key) + "\" " + why);
}

bool ConfigReader::has(std::string_view key) const {
  auto it = config_.find(key);
  return it != config_.end() && !it->is_null();
}

const nlohmann::json* ConfigReader::find(std::initializer_list<std::string_view> keys,
                                         std::string_view* found) const {
  for (std::string_view k : keys) {
    auto it = config_.find(k);
    if (it != config_.end() && !it->is_null()) {
      *found = k;
      return &*it;
    }
  }
  *found = *keys.begin();
  return nullptr;
}

int64_t ConfigReader::integer(std::initializer_list<std::string_view> keys, std::optional<int64_t> fallback,
                              int64_t min, int64_t max) const {
  std::string_view key;
  const nlohmann::json* v = find(keys, &key);
  if (!v) {
    if (fallback) return *fallback;
    fail(key, "is missing");
  }
  // Integers written as 64.0 are accepted; 64.5, strings, NaN are not.
  if (!v->is_number()) fail(key, "must be an integer, got " + v->dump());
  const double d = v->get<double>();
  if (!std::isfinite(d) || d != std::floor(d)) fail(key, "must be an integer, got " + v->dump());
  if (d < static_cast<double>(min) || d > static_cast<double>(max))
    fail(key, "must be in [" + std::to_string(min) + ", " + std::to_string(max) + "], got " + v->dump());
  return static_cast<int64_t>(d);
}

double ConfigReader::number(std::initializer_list<std::string_view> keys, std::optional<double> fallback,
                            double min, double max) const {
  std::string_view key;
  const nlohmann::json* v = find(keys, &key);
  if (!v) {
    if (fallback) return *fallback;
    fail(key, "is missing");
  }
  if (!v->is_number()) fail(key, "must be a number, got " + v->dump());
  const double d = v->get<double>();
  if (!std::isfinite(d) || d < min || d > max)
    fail(key, "must be a finite number in [" + std::to_string(min) + ", " + std::to_string(max) + "], got " +
                  v->dump());
  return d;
}

bool ConfigReader::boolean(std::string_view key, bool fallback) const {
  if (!has(key)) return fallback;
  const auto& v = config_.at(std::string(key));
  if (!v.is_boolean()) fail(key, "must be true or false, got " + v.dump());
  return v.get<bool>();
}

std::string ConfigReader::string(std::string_view key, std::optional<std::string> fallback) const {
  if (!has(key)) {
    if (fallback) return *fallback;
    fail(key, "is missing");
  }
  const auto& v = config_.at(std::string(key));
  if (!v.is_string()) fail(key, "must be a string, got " + v.dump());
  return v.get<std::string>();
}

std::vector<int32_t> ConfigReader::token_ids(std::string_view key) const {
  std::vector<int32_t> ids;
  if (!has(key)) return ids;
  const auto& v = config_.at(std::string(key));
  auto add = [&](const nlohmann::json& e) {
    if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() > INT32_MAX)
      fail(key, "must be a token id or a list of token ids, got " + v.dump());
    ids.push_back(e.get<int32_t>());
  };
  if (v.is_array())
    for (const auto& e : v) add(e);
  else
    add(v);
  return ids;
}

void read_special_ids(const ConfigReader& cfg, ModelInfo& info) {
  auto bos = cfg.token_ids("bos_token_id");
  if (!bos.empty()) info.bos_id = bos.front();
  info.eos_ids = cfg.token_ids("eos_token_id");
  if (!info.eos_ids.empty()) info.eos_id = info.eos_ids.front();
  for (int32_t id : info.eos_ids)
    if (id >= info.vocab_size) cfg.fail("eos_token_id", "is outside the vocabulary");
}

// ---- WeightLoader ----------------------------------------------------------------------

WeightLoader::WeightLoader(const WeightFiles& files, const LoadOptions& options,
                           std::vector<std::string> prefixes)
    : files_(files),
      backend_(options.backend ? options.backend : &cpu_backend()),
      weight_dtype_(options.weight_dtype),
      kv_dtype_(options.kv_dtype),
      random_weights_(options.random_weights && !options.plan_only),
      seed_(options.seed),
      plan_(options.plan_only),
      plan_from_config_(options.plan_only && files.names().empty()),
      plan_dtype_(options.plan_dtype),
      record_(options.record),
      prefixes_(std::move(prefixes)),
      copy_from_map_(options.mode == LoadMode::Copy && files.mode() == LoadMode::Mmap && !plan_ &&
                     !random_weights_) {
  // A backend that cannot multiply by the requested weight type says so now, not mid-forward.
  if (weight_dtype_ && !plan_ && !backend_->supports(Op::Matmul, *weight_dtype_))
    throw std::runtime_error("--dtype " + std::string(dtype_name(*weight_dtype_)) + ": the " + backend_->name() +
                             " backend cannot run matmuls with " + std::string(dtype_name(*weight_dtype_)) +
                             " weights (use f32, f16 or bf16 there, or the cpu device)");
  if (kv_dtype_ && *kv_dtype_ != DType::F32 && *kv_dtype_ != DType::F16)
    throw std::runtime_error("--kv-dtype " + std::string(dtype_name(*kv_dtype_)) + ": the KV cache is f32 or f16");
  if (kv_dtype_ && !plan_ && !backend_->supports(Op::Attention, *kv_dtype_))
    throw std::runtime_error("--kv-dtype " + std::string(dtype_name(*kv_dtype_)) + ": the " + backend_->name() +
                             " backend has no " + std::string(dtype_name(*kv_dtype_)) + " KV cache (use f32)");
}

DType WeightLoader::kv_dtype() const {
  if (kv_dtype_) return *kv_dtype_;
  return quantized_ && backend_->supports(Op::Attention, DType::F16) ? DType::F16 : DType::F32;
}

bool WeightLoader::has(const std::string& name) const {
  if (random_weights_) return false;  // optional tensors are absent from a synthetic model
  for (const auto& p : prefixes_)
    if (files_.has(p + name)) return true;
  return false;
}

const TensorInfo& WeightLoader::lookup(const std::string& name, std::string* full) const {
  for (const auto& p : prefixes_) {
    if (files_.has(p + name)) {
      *full = p + name;
      return files_.info(*full);
    }
  }
  return files_.info(prefixes_.front() + name);  // throws MissingTensor naming it
}

// A synthetic weight: vectors named *.weight (norm scales) are 1, other vectors 0, matrices
// uniform in [-0.05, 0.05), from a stream seeded by the name, so any model builds from its
// config alone with activations that stay finite. fill() hands out the values in order.
class RandomValues {
 public:
  RandomValues(uint64_t seed, const std::string& name, bool is_vector)
      : state_(seed ^ std::hash<std::string>{}(name)), is_vector_(is_vector),
        is_scale_(name.size() >= 7 && name.compare(name.size() - 7, 7, ".weight") == 0) {}
  void fill(float* v, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      if (is_vector_) {
        v[i] = is_scale_ ? 1.0f : 0.0f;
        continue;
      }
      state_ = state_ * 6364136223846793005ull + 1442695040888963407ull;  // LCG, top bits
      v[i] = (static_cast<float>(state_ >> 40) / 16777216.0f - 0.5f) * 0.1f;
    }
  }

 private:
  uint64_t state_;
  bool is_vector_, is_scale_;
};

Tensor WeightLoader::random(const std::string& name, std::initializer_list<int64_t> shape) {
  Tensor t = alloc_host(Tensor::contiguous(nullptr, DType::F32, shape), DType::F32);
  RandomValues(seed_, name, shape.size() == 1).fill(t.ptr<float>(), t.numel());
  return t;
}

Tensor WeightLoader::host(const std::string& name, std::initializer_list<int64_t> shape, std::string* full) {
  if (random_weights_) {
    *full = prefixes_.front() + name;
    return random(name, shape);
  }
  if (plan_from_config_) {
    *full = prefixes_.front() + name;
    return Tensor::contiguous(nullptr, plan_dtype_, shape);
  }
  const TensorInfo& info = lookup(name, full);
  std::vector<int64_t> want(shape);
  if (info.shape != want) {
    auto str = [](const std::vector<int64_t>& s) {
      std::string r = "[";
      for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
      return r + "]";
    };
    throw std::runtime_error(files_.source() + ": tensor \"" + *full + "\" has shape " + str(info.shape) +
                             " but the config implies " + str(want));
  }
  if (!traits(info.dtype).is_float)
    throw std::runtime_error(files_.source() + ": tensor \"" + *full + "\" has dtype " +
                             std::string(dtype_name(info.dtype)) + ", expected a float type");
  if (plan_) return Tensor::contiguous(nullptr, info.dtype, shape);  // the header is enough
  sources_.push_back(files_.get(*full));
  return sources_.back();
}

// Hands the finished weight to the backend. Of the host buffers made while loading it (random
// values, a transpose, a dtype conversion), only the one the backend reads in place is kept;
// the others are freed now, so memory holds each weight once, not once per step. Mapped file
// pages it was made from are dropped too, unless the backend reads them in place.
Tensor WeightLoader::place(const Tensor& host_tensor) {
  if (plan_) return host_tensor;
  Tensor host = host_tensor;
  if (copy_from_map_ && is_source(host)) {  // kept as stored under LoadMode::Copy: into anonymous memory
    host = alloc_host(host_tensor, host_tensor.dtype);
    convert_rows(host_tensor, host);
  }
  std::shared_ptr<void> keep;
  Tensor t = backend_->adopt_weight(host, !is_source(host), keep);  // not a file's: ours to rewrite
  if (keep) memory_.push_back(std::move(keep));
  if (t.data == host.data)  // read in place: keep its buffer
    for (auto& buffer : scratch_)
      if (buffer.get() == t.data) memory_.push_back(std::move(buffer));
  scratch_.clear();
  for (const Tensor& source : sources_)
    if (source.data != t.data) files_.release(source);
  sources_.clear();
  return t;
}

// Frees the buffer or drops the mapped pages behind t, a part read for a weight being loaded,
// once it has been copied out (memory then holds one part at a time, not all of them).
void WeightLoader::drop(const Tensor& t) {
  std::erase_if(scratch_, [&](const std::shared_ptr<void>& buffer) { return buffer.get() == t.data; });
  std::erase_if(sources_, [&](const Tensor& source) {
    if (source.data != t.data) return false;
    files_.release(source);
    return true;
  });
}

bool WeightLoader::is_source(const Tensor& t) const {
  for (const Tensor& source : sources_)
    if (source.data == t.data) return true;
  return false;
}

// New host memory for a contiguous tensor shaped like `like`, held until the weight it
// belongs to is placed.
Tensor WeightLoader::alloc_host(const Tensor& like, DType dtype) {
  Tensor t = Tensor::contiguous_like(like, dtype, nullptr);
  auto buffer = std::make_shared<AlignedBuffer>(t.nbytes(), t.nbytes() >= (size_t{4} << 20));
  std::shared_ptr<void> memory(buffer, buffer->data());
  t.data = memory.get();
  scratch_.push_back(std::move(memory));
  return t;
}

// Converts a contiguous host tensor to dtype `to`, row by row through F32.
// Quantized types (Q8_0, Q4_0: blocks of 32) quantize each row; rows that do not hold whole
// blocks stay as they are (the planner counts them the same way).
Tensor WeightLoader::convert(const Tensor& src, DType to) {
  if (src.cols() % traits(to).block_elems) return src;
  if (plan_) return Tensor::contiguous_like(src, to, nullptr);
  const Tensor dst = alloc_host(src, to);
  convert_rows(src, dst);
  return dst;
}

// Both contiguous with the same number of elements; a vector counts as one row. A source read
// from the files has its pages dropped block by block as they are done, so memory never holds
// both whole (at the peak a 125 MiB embedding table would otherwise count twice).
void WeightLoader::convert_rows(const Tensor& src, const Tensor& dst) {
  const int64_t rows = src.ndim == 1 ? 1 : src.rows(), cols = src.numel() / std::max<int64_t>(rows, 1);
  const Tensor s = Tensor::contiguous(src.data, src.dtype, {rows, cols});
  const Tensor d = Tensor::contiguous(dst.data, dst.dtype, {rows, cols});
  const bool from_files = is_source(src);
  const auto row_bytes = static_cast<int64_t>(dtype_bytes(s.dtype, cols));
  const int64_t block = std::max<int64_t>(1, (int64_t{4} << 20) / std::max<int64_t>(1, row_bytes));
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r0 = 0; r0 < rows; r0 += block) {
    const Tensor part = s.rows_view(r0, std::min(block, rows - r0));
    if (s.dtype == d.dtype) {
      std::memcpy(d.row(r0), part.data, part.nbytes());
    } else {
      for (int64_t r = r0; r < r0 + part.rows(); ++r) {
        read_row(s, r, row.data());
        convert_row(d.dtype, row.data(), d.row(r), cols);
      }
    }
    if (from_files) files_.release(part);
  }
}

void WeightLoader::record(const std::string& full, DType stored, const Tensor& t) {
  if (!record_) return;
  PlannedTensor p{full, stored, t.dtype, {}, t.nbytes()};
  for (int i = 0; i < t.ndim; ++i) p.shape.push_back(t.dim(i));
  record_->push_back(std::move(p));
}

Tensor WeightLoader::finish(const std::string& full, DType stored, const Tensor& t, bool counted) {
  record(full, stored, t);
  if (counted) bytes_ += t.nbytes();
  quantized_ |= is_quantized(t.dtype);
  return place(t);
}

Tensor WeightLoader::matrix(const std::string& name, int64_t rows, int64_t cols) {
  std::string full;
  Tensor t = host(name, {rows, cols}, &full);
  const DType stored = t.dtype;
  if (weight_dtype_ && *weight_dtype_ != t.dtype) t = convert(t, *weight_dtype_);
  return finish(full, stored, t, true);
}

Tensor WeightLoader::matrices(const std::string& name, int64_t n, int64_t rows, int64_t cols) {
  std::string full;
  Tensor t = host(name, {n, rows, cols}, &full).reshape({n * rows, cols});
  const DType stored = t.dtype;
  if (weight_dtype_ && *weight_dtype_ != t.dtype) t = convert(t, *weight_dtype_);
  return finish(full, stored, t, true);
}

namespace {

// dst [rows, cols] (contiguous) = src [cols, rows] (rows ld apart) transposed, 16 columns of
// dst at a time: src is read as 16 sequential streams, and each row of dst gets a whole 64-byte
// line. (One column at a time would read src across a page per element.)
void transpose(float* dst, const float* src, int64_t rows, int64_t cols, int64_t ld) {
  constexpr int64_t kBand = 16;
  for (int64_t c0 = 0; c0 < cols; c0 += kBand) {
    const int64_t c1 = std::min(c0 + kBand, cols);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = c0; c < c1; ++c) dst[r * cols + c] = src[c * ld + r];
  }
}

}  // namespace

Tensor WeightLoader::matrix_transposed(const std::string& name, int64_t rows, int64_t cols) {
  std::string full;
  const Tensor raw = host(name, {cols, rows}, &full);  // [in, out]
  const DType want = weight_dtype_.value_or(raw.dtype);
  Tensor t = Tensor::contiguous(nullptr, DType::F32, {rows, cols});
  if (!plan_) {
    const Tensor stored = raw.dtype == DType::F32 ? raw : convert(raw, DType::F32);
    t = alloc_host(t, DType::F32);
    transpose(t.ptr<float>(), stored.ptr<float>(), rows, cols, stored.row_stride());
  }
  if (want != DType::F32) t = convert(t, want);
  return finish(full, raw.dtype, t, true);
}

int64_t FusedQkv::stored_row(int64_t r) const {
  const int64_t d = head_dim, group_rows = int64_t{q_per_group + 2} * d;
  if (r < q_rows()) return r / (q_per_group * d) * group_rows + r % (q_per_group * d);  // q head
  r -= q_rows();
  const int64_t which = r / kv_rows();  // 0: k, 1: v
  r %= kv_rows();
  return r / d * group_rows + (q_per_group + which) * d + r % d;
}

// A copy of `src` [rows, cols] whose row r is stored row layout.stored_row(r).
Tensor WeightLoader::reorder_rows(const Tensor& src, const FusedQkv& layout) {
  if (plan_) return src;
  const Tensor dst = alloc_host(src, src.dtype);
  const size_t row_bytes = dtype_bytes(src.dtype, src.cols());
  for (int64_t r = 0; r < src.rows(); ++r) std::memcpy(dst.row(r), src.row(layout.stored_row(r)), row_bytes);
  return dst;
}

Tensor WeightLoader::fused_qkv(const std::string& name, const FusedQkv& layout, int64_t cols) {
  std::string full;
  Tensor t = host(name, {layout.rows(), cols}, &full);
  const DType stored = t.dtype;
  if (layout.q_per_group != 1 || layout.groups != 1) t = reorder_rows(t, layout);  // one group is already q | k | v
  if (weight_dtype_ && *weight_dtype_ != t.dtype) t = convert(t, *weight_dtype_);
  return finish(full, stored, t, true);
}

Tensor WeightLoader::fused_qkv_bias(const std::string& name, const FusedQkv& layout) {
  std::string full;
  Tensor t = host(name, {layout.rows()}, &full).reshape({layout.rows(), 1});
  const DType stored = t.dtype;
  t = reorder_rows(convert(t, DType::F32), layout).reshape({layout.rows()});
  return finish(full, stored, t, true);
}

MatrixStack WeightLoader::stack(const std::vector<std::string>& names, const std::vector<int64_t>& rows,
                                int64_t cols, bool biases) {
  MatrixStack s;
  if (stacks(names, cols)) {
    s.w.push_back(stacked(names, ".weight", rows, cols, weight_dtype_));
    s.b.push_back(biases ? stacked(names, ".bias", rows, 0, DType::F32) : Tensor{});
    return s;
  }
  for (size_t i = 0; i < names.size(); ++i) {
    s.w.push_back(matrix(names[i] + ".weight", rows[i], cols));
    s.b.push_back(biases ? vector(names[i] + ".bias", rows[i]) : Tensor{});
  }
  return s;
}

// Stacked where the loader writes new memory anyway (see MatrixStack), the parts share a
// stored dtype, and a quantized dtype gets whole blocks per row (else matrix() keeps them).
bool WeightLoader::stacks(const std::vector<std::string>& names, int64_t cols) const {
  if (plan_) return false;  // the plan records the parts either way
  const DType stored = stored_dtype(names.front() + ".weight");
  for (const auto& name : names)
    if (stored_dtype(name + ".weight") != stored) return false;
  const DType to = weight_dtype_.value_or(stored);
  if (cols % traits(to).block_elems) return false;
  return random_weights_ || to != stored || copy_from_map_;
}

// As host() would read it: synthetic weights are F32.
DType WeightLoader::stored_dtype(const std::string& name) const {
  if (random_weights_) return DType::F32;
  std::string full;
  return lookup(name, &full).dtype;
}

Tensor WeightLoader::stacked(const std::vector<std::string>& names, const std::string& suffix,
                             const std::vector<int64_t>& rows, int64_t cols, std::optional<DType> to) {
  int64_t total = 0;
  for (int64_t r : rows) total += r;
  const int64_t width = std::max<int64_t>(cols, 1);  // a vector is a column
  const DType dtype = to.value_or(stored_dtype(names.front() + suffix));
  const Tensor t = alloc_host(Tensor::contiguous(nullptr, dtype, {total, width}), dtype);
  int64_t at = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    const Tensor dst = t.rows_view(at, rows[i]);
    const std::string name = names[i] + suffix;
    if (random_weights_) {  // generated row by row into place: no buffer per part
      RandomValues values(seed_, name, cols == 0);
      std::vector<float> row(static_cast<size_t>(width * (cols ? 1 : rows[i])));
      for (int64_t r = 0; r < (cols ? rows[i] : 1); ++r) {
        values.fill(row.data(), static_cast<int64_t>(row.size()));
        convert_row(dtype, row.data(), cols ? dst.row(r) : dst.data, static_cast<int64_t>(row.size()));
      }
      record(prefixes_.front() + name, DType::F32, cols ? dst : dst.reshape({rows[i]}));
    } else {
      std::string full;
      const Tensor part = cols ? host(name, {rows[i], cols}, &full) : host(name, {rows[i]}, &full);
      convert_rows(part, dst);
      drop(part);
      record(full, part.dtype, cols ? dst : dst.reshape({rows[i]}));
    }
    at += rows[i];
  }
  bytes_ += t.nbytes();
  quantized_ |= is_quantized(t.dtype);
  return place(cols ? t : t.reshape({total}));
}

// Not counted in bytes_loaded(): a decode step reads one row (the model adds what it reads).
Tensor WeightLoader::embedding(const std::string& name, int64_t rows, int64_t cols) {
  std::string full;
  Tensor t = host(name, {rows, cols}, &full);
  const DType stored = t.dtype;
  if (random_weights_ && weight_dtype_ && *weight_dtype_ != t.dtype) t = convert(t, *weight_dtype_);
  return finish(full, stored, t, false);
}

Tensor WeightLoader::vector(const std::string& name, int64_t n) { return f32(name, {n}); }

Tensor WeightLoader::optional_vector(const std::string& name, int64_t n) {
  return has(name) ? vector(name, n) : Tensor{};
}

Tensor WeightLoader::f32(const std::string& name, std::initializer_list<int64_t> shape) {
  std::string full;
  Tensor t = host(name, shape, &full);
  const DType stored = t.dtype;
  if (t.dtype != DType::F32) t = convert(t, DType::F32);
  return finish(full, stored, t, true);
}

void matmul(Backend& backend, const Tensor& out, const Tensor& x, const MatrixStack& w) {
  int64_t col = 0;
  for (size_t i = 0; i < w.w.size(); ++i) {
    backend.matmul(out.cols_view(col, w.w[i].rows()), x, w.w[i], w.b[i]);
    col += w.w[i].rows();
  }
}

// ---- Activations -----------------------------------------------------------------------

Tensor Activations::get(size_t slot, int64_t rows, int64_t cols) {
  if (slot >= slots_.size()) slots_.resize(slot + 1);
  Slot& s = slots_[slot];
  const size_t need = static_cast<size_t>(rows * cols) * sizeof(float);
  if (need > s.bytes) {
    s.memory = backend_->alloc(need);
    s.bytes = need;
  }
  return Tensor::contiguous(s.memory.get(), DType::F32, {rows, cols}, backend_->device());
}

void check_room(const Cache& cache, int64_t n_new, int64_t max_context) {
  if (n_new <= 0) throw std::invalid_argument("forward() needs at least one token");
  const int64_t end = cache.n_past() + n_new;
  const int64_t limit = std::min(cache.max_seq(), max_context);
  if (end > limit)
    throw std::runtime_error("context full: " + std::to_string(cache.n_past()) + " positions used + " +
                             std::to_string(n_new) + " new > " + std::to_string(limit) + " (cache holds " +
                             std::to_string(cache.max_seq()) + ", model supports " + std::to_string(max_context) + ")");
}

void check_residual(const Tensor& residual, int64_t width, const std::string& architecture) {
  if (residual.empty() || residual.dtype != DType::F32 || residual.ndim != 2 || residual.cols() != width ||
      residual.rows() < 1)
    throw std::invalid_argument(architecture + ": project_to_vocab expects an F32 residual [rows, " +
                                std::to_string(width) + "], got " + residual.describe());
}

Cache attention_cache(Backend& backend, int64_t max_seq, int n_layers, int64_t kv_dim, DType dtype) {
  Cache cache(backend, max_seq);
  // The whole cache is checked against memory before the first layer is allocated.
  uint64_t bytes = 2 * dtype_bytes(dtype, 1);  // k and v
  for (int64_t n : {int64_t{n_layers}, max_seq, kv_dim})
    if (n < 0 || __builtin_mul_overflow(bytes, static_cast<uint64_t>(n), &bytes)) bytes = UINT64_MAX;
  cache.check_fits(bytes, "the KV cache (" + std::to_string(n_layers) + " layers x 2 x " + std::to_string(max_seq) +
                              " positions x " + std::to_string(kv_dim) + " " + std::string(dtype_name(dtype)) + " values)");
  for (int l = 0; l < n_layers; ++l) {
    LayerCache lc;
    lc.k = cache.alloc({max_seq, kv_dim}, dtype);  // [S, Hkv*d]: all KV heads of a position together
    lc.v = cache.alloc({max_seq, kv_dim}, dtype);
    cache.layers.push_back(lc);
  }
  return cache;
}

void append_kv(Backend& backend, const LayerCache& kv, int64_t pos0, const Tensor& k, const Tensor& v) {
  backend.copy(kv.k.rows_view(pos0, k.rows()), k);
  backend.copy(kv.v.rows_view(pos0, v.rows()), v);
}

std::vector<float> alibi_slopes(int n_heads) {
  auto base = [](int m) { return std::pow(2.0, -8.0 / m); };  // 2^(-2^-(log2(m) - 3))
  int c = 1;
  while (2 * c <= n_heads) c *= 2;
  std::vector<float> slopes;
  for (int i = 1; i <= c; ++i) slopes.push_back(static_cast<float>(std::pow(base(c), i)));
  for (int i = 0; i < n_heads - c; ++i) slopes.push_back(static_cast<float>(std::pow(base(2 * c), 2 * i + 1)));
  return slopes;
}

Tensor alibi_slopes_tensor(Backend& backend, int n_heads, float scale, std::shared_ptr<void>& keep) {
  std::vector<float> slopes = alibi_slopes(n_heads);
  for (float& s : slopes) s *= scale;
  Tensor t = backend.alloc_tensor(DType::F32, {n_heads}, keep);
  backend.upload(t, slopes.data());
  return t;
}

Activation parse_activation(const ConfigReader& cfg, std::string_view key, const std::string& fallback) {
  const std::string name = cfg.string(key, fallback);
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return Activation::GeluTanh;
  if (name == "gelu") return Activation::Gelu;
  if (name == "relu") return Activation::Relu;
  if (name == "silu" || name == "swish") return Activation::Silu;
  cfg.fail(key, "\"" + name + "\" is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu, silu)");
}

void apply_activation(Backend& backend, Activation act, const Tensor& out, const Tensor& x) {
  switch (act) {
    case Activation::Gelu: return backend.gelu(out, x);
    case Activation::GeluTanh: return backend.gelu_tanh(out, x);
    case Activation::Relu: return backend.relu(out, x);
    case Activation::Silu: return backend.silu(out, x);
  }
}

Tensor logits_to_host(Backend& backend, const Tensor& t, AlignedBuffer& buffer) {
  if (backend.device() == Device::CPU) return t;
  if (buffer.size() < t.nbytes()) buffer = AlignedBuffer(t.nbytes());
  backend.download(buffer.data(), t);
  Tensor h = t;
  h.data = buffer.data();
  h.device = Device::CPU;
  return h;
}

// ---- rotary position embeddings --------------------------------------------------------

RopeConfig read_rope_config(const ConfigReader& cfg, double default_theta) {
  RopeConfig rope;
  // transformers v5 folds theta and scaling into rope_parameters; v4 has rope_theta + rope_scaling.
  const nlohmann::json* scaling = nullptr;
  std::string where = "rope_scaling";
  if (cfg.has("rope_parameters")) {
    const auto& p = cfg.json().at("rope_parameters");
    if (!p.is_object()) cfg.fail("rope_parameters", "must be an object");
    ConfigReader params(p, "config.json rope_parameters");
    rope.theta = params.number({"rope_theta"}, cfg.number({"rope_theta"}, default_theta, 1e-9), 1e-9);
    scaling = &p;
    where = "rope_parameters";
  } else {
    rope.theta = cfg.number({"rope_theta"}, default_theta, 1e-9);
    if (cfg.has("rope_scaling")) scaling = &cfg.json().at("rope_scaling");
  }
  if (!scaling) return rope;
  if (!scaling->is_object()) cfg.fail(where, "must be an object or null");
  ConfigReader s(*scaling, "config.json " + where);
  const std::string type = s.string("rope_type", s.string("type", "default"));
  if (type == "default") return rope;
  if (type == "linear") {
    rope.scaling.type = RopeScaling::Type::Linear;
    rope.scaling.factor = s.number({"factor"}, {}, 1e-9);
  } else if (type == "llama3") {
    rope.scaling.type = RopeScaling::Type::Llama3;
    rope.scaling.factor = s.number({"factor"}, {}, 1e-9);
    rope.scaling.low_freq_factor = s.number({"low_freq_factor"}, {}, 1e-9);
    rope.scaling.high_freq_factor = s.number({"high_freq_factor"}, {}, 1e-9);
    rope.scaling.original_max_positions = s.number({"original_max_position_embeddings"}, {}, 1);
    if (rope.scaling.high_freq_factor <= rope.scaling.low_freq_factor)
      s.fail("high_freq_factor", "must be greater than low_freq_factor");
  } else {
    s.fail("rope_type", "\"" + type + "\" is not supported (supported: default, linear, llama3)");
  }
  return rope;
}

namespace {

// Frequency i after scaling (transformers' _compute_llama3_parameters / linear scaling).
double scaled_inv_freq(double inv_freq, const RopeScaling& s) {
  switch (s.type) {
    case RopeScaling::Type::None: return inv_freq;
    case RopeScaling::Type::Linear: return inv_freq / s.factor;
    case RopeScaling::Type::Llama3: {
      const double wavelen = 2.0 * M_PI / inv_freq;
      const double low_wavelen = s.original_max_positions / s.low_freq_factor;
      const double high_wavelen = s.original_max_positions / s.high_freq_factor;
      if (wavelen < high_wavelen) return inv_freq;
      if (wavelen > low_wavelen) return inv_freq / s.factor;
      const double smooth = (s.original_max_positions / wavelen - s.low_freq_factor) /
                            (s.high_freq_factor - s.low_freq_factor);
      return (1.0 - smooth) * inv_freq / s.factor + smooth * inv_freq;
    }
  }
  return inv_freq;
}

}  // namespace

RopeTables make_rope_tables(Backend& backend, int rot_dims, int64_t max_pos, const RopeConfig& rope) {
  const int half = rot_dims / 2;
  std::vector<float> cos(static_cast<size_t>(max_pos * half)), sin(cos.size());
  for (int i = 0; i < half; ++i) {
    // transformers computes inv_freq in float32: 1 / theta^(2i/d)
    const float inv = static_cast<float>(
        scaled_inv_freq(1.0 / std::pow(rope.theta, 2.0 * i / rot_dims), rope.scaling));
    for (int64_t p = 0; p < max_pos; ++p) {
      const float angle = static_cast<float>(p) * inv;
      cos[static_cast<size_t>(p * half + i)] = std::cos(angle);
      sin[static_cast<size_t>(p * half + i)] = std::sin(angle);
    }
  }
  RopeTables t;
  t.memory.resize(2);
  t.cos = backend.alloc_tensor(DType::F32, {max_pos, half}, t.memory[0]);
  t.sin = backend.alloc_tensor(DType::F32, {max_pos, half}, t.memory[1]);
  backend.upload(t.cos, cos.data());
  backend.upload(t.sin, sin.data());
  return t;
}

const RopeTables& RopeCache::upto(int64_t n) {
  if (n > built_) {
    const int64_t size = std::min(std::max<int64_t>(n, std::max<int64_t>(2 * built_, 256)), std::max(n, max_positions_));
    tables_ = make_rope_tables(*backend_, rot_dims_, size, rope_);
    built_ = size;
  }
  return tables_;
}

}  // namespace purellm
