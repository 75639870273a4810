// Building blocks shared by the model files: reading config.json, loading weights by name,
// activation buffers, rotary tables. The arithmetic itself is Backend ops; what is here is
// the bookkeeping every model file would otherwise repeat.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/model.hpp"

namespace purellm {

// Reads config.json values with validation; every error names the key and the file.
class ConfigReader {
 public:
  explicit ConfigReader(const nlohmann::json& config, std::string where = "config.json");
  bool has(std::string_view key) const;  // present and not null
  // The first of `keys` that is present; without a fallback a missing key is an error.
  int64_t integer(std::initializer_list<std::string_view> keys, std::optional<int64_t> fallback = {},
                  int64_t min = 1, int64_t max = INT32_MAX) const;
  double number(std::initializer_list<std::string_view> keys, std::optional<double> fallback = {},
                double min = -1e300, double max = 1e300) const;
  bool boolean(std::string_view key, bool fallback) const;
  std::string string(std::string_view key, std::optional<std::string> fallback = {}) const;
  const nlohmann::json& json() const { return config_; }
  [[noreturn]] void fail(std::string_view key, const std::string& why) const;
  // Token ids (int or list) for keys such as eos_token_id.
  std::vector<int32_t> token_ids(std::string_view key) const;

 private:
  const nlohmann::json* find(std::initializer_list<std::string_view> keys, std::string_view* found) const;
  const nlohmann::json& config_;
  std::string where_;
};

// The most layers a config may declare: far above any checkpoint (Llama 3.1 405B has 126),
// low enough that per-layer tables built from the config alone, before any weight is read,
// stay small (2^31 layers made Llama's per-layer sliding-window table 16 GB).
constexpr int64_t kMaxLayers = 1 << 16;

// Fills the fields every ModelInfo shares from config.json (bos/eos ids).
void read_special_ids(const ConfigReader& cfg, ModelInfo& info);

// Row layout of a fused query/key/value projection as stored: `groups` blocks, each
// [q_per_group query heads | 1 key head | 1 value head], every head head_dim rows.
//   Falcon-7b (MQA):            1 group of [Hq q | k | v]      (already q | k | v)
//   Falcon-40b (GQA):           Hkv groups of [Hq/Hkv q | k_g | v_g]
//   GPT-NeoX, BLOOM, Falcon MHA: Hq groups of [q_h | k_h | v_h]  (per-head interleaved)
// WeightLoader::fused_qkv reorders the rows once at load into [all q | all k | all v]
// (query head g * q_per_group + j is head j of group g), so the matmul output splits into
// q, k, v column ranges and query head h reads KV head h / q_per_group, as attention() expects.
struct FusedQkv {
  int groups = 1;       // = number of KV heads
  int q_per_group = 1;  // query heads per KV head
  int head_dim = 0;
  int64_t q_rows() const { return int64_t{groups} * q_per_group * head_dim; }
  int64_t kv_rows() const { return int64_t{groups} * head_dim; }
  int64_t rows() const { return q_rows() + 2 * kv_rows(); }
  // The stored row that becomes row r of [all q | all k | all v].
  int64_t stored_row(int64_t r) const;
};

// Matrices that multiply the same input (q, k and v; gate and up), stacked by rows into one
// matrix where the loader writes the weights into new memory anyway (a dtype conversion,
// random weights, mapped files copied into anonymous memory), so that a decode step makes one
// pass over them with one thread team: a small matrix alone reads well below the bandwidth
// (each call starts its threads' streams anew; SmolLM2-135M's 192 x 576 k and v at 30-36 GB/s
// where its large ones read 65-75). Where the weights are read in place from the files
// (--mmap, or a WeightFiles copied whole) the parts stay apart, as stacking them would copy them.
struct MatrixStack {
  std::vector<Tensor> w;  // one stacked matrix [sum of rows, cols], or the parts in order
  std::vector<Tensor> b;  // their biases, likewise (empty Tensors where there are none)
};

// out [T, sum of rows] = x W^T + b for the stack: part i fills the columns after parts 0..i-1.
void matmul(Backend& backend, const Tensor& out, const Tensor& x, const MatrixStack& w);

// Loads weights by their checkpoint names, checks shapes, converts dtypes once, places
// them on the backend. Names are tried with each prefix in turn ("transformer.", ""), so
// checkpoints saved with and without a prefix both load. In plan-only mode (LoadOptions) it
// reads and allocates nothing: each weight is a shape and a dtype without data, so the model
// file itself says what it would load (the memory planner builds models this way).
class WeightLoader {
 public:
  WeightLoader(const WeightFiles& files, const LoadOptions& options,
               std::vector<std::string> prefixes = {""});
  Backend& backend() const { return *backend_; }
  bool has(const std::string& name) const;
  // A matrix [rows, cols] = [out, in], in the stored dtype or options.weight_dtype.
  Tensor matrix(const std::string& name, int64_t rows, int64_t cols);
  // A matrix stored transposed as [cols, rows] (GPT-2's Conv1D [in, out]), transposed once
  // here so every matmul reads W as [out, in] with contiguous rows.
  Tensor matrix_transposed(const std::string& name, int64_t rows, int64_t cols);
  // A stack of n matrices stored [n, rows, cols] (MoE experts), as one matrix [n*rows, cols]:
  // matrix i is rows_view(i * rows, rows). Same dtype rules as matrix().
  Tensor matrices(const std::string& name, int64_t n, int64_t rows, int64_t cols);
  // Matrices "<name>.weight" [rows[i], cols] (and vectors "<name>.bias" [rows[i]] when
  // `biases`) that multiply the same input: see MatrixStack. Same dtype rules as matrix().
  MatrixStack stack(const std::vector<std::string>& names, const std::vector<int64_t>& rows, int64_t cols,
                    bool biases);
  // A token-embedding table [rows, cols], kept in its stored dtype (it doubles as a tied head).
  Tensor embedding(const std::string& name, int64_t rows, int64_t cols);
  // An F32 vector (norm weights, biases, per-head constants) of n elements.
  Tensor vector(const std::string& name, int64_t n);
  // Same, or an empty Tensor when the checkpoint has no such tensor.
  Tensor optional_vector(const std::string& name, int64_t n);
  // A fused qkv weight [layout.rows(), cols] / bias [layout.rows()], rows reordered to
  // [all q | all k | all v] (see FusedQkv).
  Tensor fused_qkv(const std::string& name, const FusedQkv& layout, int64_t cols);
  Tensor fused_qkv_bias(const std::string& name, const FusedQkv& layout);
  // Any tensor converted to F32 with the given shape (conv kernels, expert stacks, ...).
  Tensor f32(const std::string& name, std::initializer_list<int64_t> shape);
  // Bytes of weights this model reads per decoded token, accumulated as tensors load.
  uint64_t bytes_loaded() const { return bytes_; }
  // The attention cache's dtype: LoadOptions::kv_dtype, else F16 once any matrix loaded is
  // quantized (F32 where the backend has no F16 cache). Call after loading.
  DType kv_dtype() const;
  // Keeps storage created at load alive (owned by the model).
  std::vector<std::shared_ptr<void>> take_memory() { return std::move(memory_); }

 private:
  const TensorInfo& lookup(const std::string& name, std::string* full) const;
  Tensor host(const std::string& name, std::initializer_list<int64_t> shape, std::string* full);
  Tensor random(const std::string& name, std::initializer_list<int64_t> shape);
  Tensor place(const Tensor& host_tensor);
  bool is_source(const Tensor& t) const;  // t views a file tensor read for this weight
  void drop(const Tensor& t);
  Tensor alloc_host(const Tensor& like, DType dtype);
  Tensor convert(const Tensor& src, DType to);
  void convert_rows(const Tensor& src, const Tensor& dst);  // row r of src into row r of dst
  bool stacks(const std::vector<std::string>& names, int64_t cols) const;
  DType stored_dtype(const std::string& name) const;
  // The tensors names[i] + suffix, [rows[i], cols] (or vectors [rows[i]] when cols is 0), one
  // after the other in one new buffer of dtype `to` (or as stored without it).
  Tensor stacked(const std::vector<std::string>& names, const std::string& suffix,
                 const std::vector<int64_t>& rows, int64_t cols, std::optional<DType> to);
  void record(const std::string& full, DType stored, const Tensor& t);
  Tensor reorder_rows(const Tensor& src, const FusedQkv& layout);
  // Records the weight (LoadOptions::record), counts it per token when `counted`, places it.
  Tensor finish(const std::string& full, DType stored, const Tensor& t, bool counted);
  const WeightFiles& files_;
  Backend* backend_;
  std::optional<DType> weight_dtype_;
  std::optional<DType> kv_dtype_;
  bool quantized_ = false;  // a Q8_0 / Q4_0 matrix was loaded
  bool random_weights_;
  uint64_t seed_;
  bool plan_;                 // plan only: no data read or allocated
  bool plan_from_config_;     // plan only and no files: every weight has dtype plan_dtype_
  DType plan_dtype_;
  std::vector<PlannedTensor>* record_;
  std::vector<std::string> prefixes_;
  std::vector<std::shared_ptr<void>> memory_;   // what the placed weights read
  std::vector<std::shared_ptr<void>> scratch_;  // buffers of the weight being loaded
  std::vector<Tensor> sources_;                 // file tensors read for the weight being loaded
  bool copy_from_map_ = false;  // files mapped but Copy asked for: copy what is kept as stored
  uint64_t bytes_ = 0;
};

// Activation buffers for one forward call, kept between calls and grown when a longer
// input arrives (no allocation per token). Slot i is an F32 matrix [rows, cols].
class Activations {
 public:
  explicit Activations(Backend& backend) : backend_(&backend) {}
  Tensor get(size_t slot, int64_t rows, int64_t cols);

 private:
  struct Slot {
    std::shared_ptr<void> memory;
    size_t bytes = 0;
  };
  Backend* backend_;
  std::vector<Slot> slots_;
};

// Throws a clear error when `n_new` more positions do not fit in the cache or the model.
void check_room(const Cache& cache, int64_t n_new, int64_t max_context);

// Throws unless `residual` is an F32 [R, width] stream that project_to_vocab() can take.
void check_residual(const Tensor& residual, int64_t width, const std::string& architecture);

// A KV cache of `n_layers` attention layers, each k and v [max_seq, kv_dim] of dtype (F32, F16).
Cache attention_cache(Backend& backend, int64_t max_seq, int n_layers, int64_t kv_dim, DType dtype);

// Appends this call's keys and values (F32 [T, kv_dim], positions pos0 ..) to a layer's cache;
// copy converts them to the cache's dtype.
void append_kv(Backend& backend, const LayerCache& kv, int64_t pos0, const Tensor& k, const Tensor& v);

// ALiBi slopes for n_heads (Press et al.; transformers' build_alibi_tensor), head order:
// with c = 2^floor(log2 n) and b(m) = 2^(-8/m), heads 0..c-1 get b(c)^1..b(c)^c and the
// remaining n - c heads get the odd powers 1, 3, 5, ... of b(2c).
std::vector<float> alibi_slopes(int n_heads);
// The same slopes times `scale`, as an F32 [n_heads] tensor on the backend.
Tensor alibi_slopes_tensor(Backend& backend, int n_heads, float scale, std::shared_ptr<void>& keep);

// Activation functions named by config.json ("gelu_new", "gelu", "relu", "silu", ...).
enum class Activation { Gelu, GeluTanh, Relu, Silu };
Activation parse_activation(const ConfigReader& cfg, std::string_view key, const std::string& fallback);
void apply_activation(Backend& backend, Activation act, const Tensor& out, const Tensor& x);

// Logits on the host: a view of `t` on the CPU, or a copy into `buffer` from a device.
Tensor logits_to_host(Backend& backend, const Tensor& t, AlignedBuffer& buffer);

// ---- rotary position embeddings --------------------------------------------------------
// Scaling of the rotary frequencies (config `rope_scaling` in transformers v4, or
// `rope_parameters` in v5).
struct RopeScaling {
  enum class Type { None, Linear, Llama3 } type = Type::None;
  double factor = 1.0;
  double low_freq_factor = 1.0, high_freq_factor = 4.0;  // llama3
  double original_max_positions = 8192;                  // llama3
};

struct RopeConfig {
  double theta = 10000.0;
  RopeScaling scaling;
};

// Reads rope_theta / rope_scaling (v4) or rope_parameters (v5), naming a bad key.
RopeConfig read_rope_config(const ConfigReader& cfg, double default_theta = 10000.0);

// cos/sin tables [max_pos, rot_dims/2] for rope(): angle(p, i) = p * inv_freq_i with
// inv_freq_i = theta^(-2i/rot_dims), rescaled per `scaling`.
struct RopeTables {
  Tensor cos, sin;
  std::vector<std::shared_ptr<void>> memory;
};
RopeTables make_rope_tables(Backend& backend, int rot_dims, int64_t max_pos, const RopeConfig& rope);

// Rope tables built on demand: long-context models (128k positions) only pay for the
// positions a run actually reaches.
class RopeCache {
 public:
  RopeCache(Backend& backend, int rot_dims, int64_t max_positions, const RopeConfig& rope)
      : backend_(&backend), rot_dims_(rot_dims), max_positions_(max_positions), rope_(rope) {}
  // Tables covering positions [0, n).
  const RopeTables& upto(int64_t n);
  int rot_dims() const { return rot_dims_; }

 private:
  Backend* backend_;
  int rot_dims_;
  int64_t max_positions_;
  RopeConfig rope_;
  RopeTables tables_;
  int64_t built_ = 0;
};

}  // namespace purellm
