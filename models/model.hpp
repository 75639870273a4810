// The model interface, the caller-owned cache, the trace hook and the registry.
//
// A model file (gpt2.cpp, llama.cpp, ...) defines a Config, a Weights struct, a load
// function and forward(), and registers itself with one REGISTER_MODEL line keyed by the
// Hugging Face `model_type` and `architectures` names. Nothing else in the code base
// switches on the architecture.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tensor/backend.hpp"
#include "tensor/safetensors.hpp"

namespace purellm {

// What every model says about itself (filled from its config).
struct ModelInfo {
  std::string architecture;     // the model file's name: "gpt2", "llama", ...
  std::string model_type;       // config.json's model_type
  int64_t vocab_size = 0;
  int64_t max_context = 0;      // positions the model supports (n_positions, max_position_embeddings)
  int n_layers = 0;
  int hidden_size = 0;
  std::optional<int32_t> bos_id, eos_id;
  std::vector<int32_t> eos_ids;  // every id that ends generation (eos_token_id may be a list)
  uint64_t weight_bytes = 0;            // all weights as loaded
  uint64_t weight_bytes_per_token = 0;  // weights one decode step reads (embedding: one row)
  DType kv_dtype = DType::F32;          // of the attention cache (LoadOptions::kv_dtype)
};

// State of one layer for one sequence, owned by the caller (never by the layer).
//   attention layers: k, v  [max_seq, n_kv_heads * head_dim]
//   Mamba2 layers:    conv  [conv_dim, d_conv] (the last d_conv conv inputs),
//                     ssm   [n_heads, head_dim, d_state]
struct LayerCache {
  Tensor k, v;
  Tensor conv, ssm;
};

// The whole state of one sequence: per-layer caches and how many positions they hold.
class Cache {
 public:
  Cache(Backend& backend, int64_t max_seq) : backend_(&backend), max_seq_(max_seq) {}
  int64_t max_seq() const { return max_seq_; }
  int64_t n_past() const { return n_past_; }  // positions already in the cache
  void advance(int64_t n) { n_past_ += n; }
  // Forget the sequence: positions back to 0 and recurrent (Mamba) state zeroed.
  void reset();
  size_t bytes() const { return bytes_; }

  std::vector<LayerCache> layers;
  // Throws a clear error, before anything is allocated, when `bytes` more of cache do not fit
  // in the memory available now (CPU backend: MemAvailable of /proc/meminfo). `what` says
  // what they are for ("KV cache of 22 layers x 2 x 2048 positions x 256 floats").
  void check_fits(uint64_t bytes, const std::string& what) const;
  // Allocates a zeroed tensor on the cache's backend, kept alive by the cache (checked with
  // check_fits first, so any cache that grows past memory gets the same clear error).
  Tensor alloc(std::initializer_list<int64_t> shape, DType dtype = DType::F32);

 private:
  Backend* backend_;
  int64_t max_seq_;
  int64_t n_past_ = 0;
  size_t bytes_ = 0;
  std::vector<std::shared_ptr<void>> memory_;
};

// Trace hook: every model calls trace(x, "attn_norm", layer) after each named intermediate.
// With no tracer set the call is one null check.
class Tracer {
 public:
  virtual ~Tracer() = default;
  // `t` lives on the model's backend; layer is -1 outside the layer stack.
  virtual void record(std::string_view name, int layer, const Tensor& t) = 0;
  // Attention probabilities cost memory: only computed when the tracer asks.
  virtual bool wants_attention_probs() const { return false; }
};

enum class Logits { Last, All };

class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelInfo& info() const = 0;
  // A cache able to hold max_seq positions for this model.
  virtual Cache make_cache(int64_t max_seq) const = 0;
  // Feeds `tokens` at positions cache.n_past() .. and advances the cache. Returns logits as a
  // host F32 tensor [rows, vocab] valid until the next call: the last position only, or every
  // position of `tokens` with Logits::All.
  virtual Tensor forward(std::span<const int32_t> tokens, Cache& cache, Logits which = Logits::Last) = 0;
  // The model's own final norm and output head applied to a residual stream F32 [R, D] on the
  // model's backend (e.g. a traced "layer_out"): host logits [R, V], valid until the next call
  // (the logit lens). Model files implement it with the code their forward() ends with.
  virtual Tensor project_to_vocab(const Tensor& residual);

  void set_tracer(Tracer* tracer) { tracer_ = tracer; }
  // The weight files the model's tensors may point into (mapped or copied); kept alive here.
  void keep_weight_files(std::shared_ptr<const WeightFiles> files) { files_ = std::move(files); }

 protected:
  bool wants_attention_probs() const { return tracer_ && tracer_->wants_attention_probs(); }
  void trace(const Tensor& t, std::string_view name, int layer = -1) const {
    if (tracer_) tracer_->record(name, layer, t);
  }
  Tracer* tracer_ = nullptr;
  std::shared_ptr<const WeightFiles> files_;
};

// One weight as a model file asked for it at load (LoadOptions::record).
struct PlannedTensor {
  std::string name;             // checkpoint name, with the first prefix the model tries
  DType stored;                 // dtype in the checkpoint (planning from config.json: its dtype)
  DType dtype;                  // dtype in memory after load (--dtype, norms and biases F32)
  std::vector<int64_t> shape;   // as the model uses it: [out, in] for matrices
  uint64_t bytes = 0;           // in memory
  int64_t numel() const;
};

// How to load a model.
struct LoadOptions {
  // Where the weights load_model keeps as stored live: Copy, anonymous memory (huge pages from
  // 4 MB); Mmap (--mmap), the mapped file, read in place. load_model maps the files either way.
  LoadMode mode = LoadMode::Copy;
  std::optional<DType> weight_dtype;       // convert matrices at load (--dtype); default: as stored
  // The attention (KV) cache's dtype (--kv-dtype): F32 or F16. Default: F16 when the matrices
  // are quantized (their rounding far exceeds F16's, and the cache is read every token, as
  // llama.cpp does), else F32 (so 16-bit checkpoints match transformers' F32 goldens); F32
  // where the backend has no F16 cache.
  std::optional<DType> kv_dtype;
  Backend* backend = nullptr;              // default: cpu_backend()
  // Synthesize every weight (random values, the shapes the config implies) instead of
  // reading files: real-shaped models for benchmarks without downloading anything.
  bool random_weights = false;
  uint64_t seed = 0;
  // Plan only: build the model without reading or allocating any weight (its tensors have
  // shapes and dtypes but no data), so memory can be planned from config.json alone. Weights
  // the files do not hold (no files given) are taken to be stored as `plan_dtype`.
  bool plan_only = false;
  DType plan_dtype = DType::F32;
  // When set, every weight the model loads is appended here (any load mode).
  std::vector<PlannedTensor>* record = nullptr;
};

// ---- registry --------------------------------------------------------------------------
using ModelFactory = std::function<std::unique_ptr<Model>(const nlohmann::json& config,
                                                          const WeightFiles& weights,
                                                          const LoadOptions& options)>;

struct ModelRegistration {
  ModelRegistration(std::string name, std::vector<std::string> model_types,
                    std::vector<std::string> architectures, ModelFactory factory);
};

// Each model file registers itself with one line at namespace scope:
//   const ModelRegistration registration("gpt2", {"gpt2"}, {"GPT2LMHeadModel"}, load_gpt2);

// Model files registered in this binary, e.g. "gpt2 (model_type gpt2; GPT2LMHeadModel)".
std::vector<std::string> supported_architectures();

// Picks the model file for a config.json (model_type first, then architectures).
// Throws naming the model_type and listing the supported ones.
ModelFactory find_model(const nlohmann::json& config);

// Loads config.json + weights from a model folder.
std::unique_ptr<Model> load_model(const std::string& dir, const LoadOptions& options = {});

// A model with random weights built from a config alone (LoadOptions::random_weights).
std::unique_ptr<Model> random_model(const nlohmann::json& config, LoadOptions options);

// Reads and parses a JSON file, throwing a message naming the file on failure.
nlohmann::json read_json_file(const std::string& path);

}  // namespace purellm
