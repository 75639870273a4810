// Memory planning before anything is downloaded or allocated: how much memory a model needs
// for its weights (in each dtype), its cache (KV per token, recurrent state per sequence) and
// its activation buffers, and whether that fits in this machine's available memory.
//
// Nothing here knows an architecture. The model file itself is the source of truth: the
// planner builds the model in plan-only mode (LoadOptions::plan_only: every weight is a shape
// and a dtype, no data) on a PlanBackend, a backend that hands out address space but no
// memory and counts what it hands out. Then
//   weights     = what the model file asked the loader for (its own ModelInfo::weight_bytes),
//   cache       = Cache::bytes() of the model's own make_cache(context),
//   activations = what one forward() of a prefill allocates (its ops do nothing here),
// so a new model file (a Mamba2 hybrid with constant conv + SSM state per layer, a sliding
// window, a fused QKV) is planned correctly the day it is registered.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/model.hpp"

namespace purellm {

struct PlanOptions {
  std::optional<DType> weight_dtype;  // convert matrices to this dtype (--dtype); none: as stored
  int64_t context = 0;                // cache positions; 0 (or more than the model has): the model's max
  int64_t prefill = 512;              // tokens of one prefill, for the activation buffers (<= context)
};

struct ModelPlan {
  ModelInfo info;                      // from the model file: weight_bytes, weight_bytes_per_token, ...
  std::vector<PlannedTensor> tensors;  // every weight, in load order
  DType stored_dtype = DType::F32;     // of the largest weight as stored
  uint64_t parameters = 0;             // elements of all weights (a tied head counted once)
  int64_t context = 0;                 // cache positions planned
  int64_t prefill = 0;
  uint64_t cache_fixed_bytes = 0;      // state whose size does not depend on the context (Mamba2 conv + SSM)
  uint64_t cache_bytes_per_token = 0;  // KV cache per position: all attention layers, k and v
  uint64_t cache_bytes = 0;            // at `context`: exactly what make_cache(context) allocates
  uint64_t activation_bytes = 0;       // the model's buffers for one prefill of `prefill` tokens

  uint64_t weight_bytes() const { return info.weight_bytes; }
  uint64_t total_bytes() const { return weight_bytes() + cache_bytes + activation_bytes; }
};

// Plans the model that `config` (a parsed config.json) describes. `weights`: the checkpoint
// when it is on disk (its headers give the exact stored dtypes and shapes are checked against
// them; no tensor data is read), or null to plan from the config alone (weights stored in the
// config's torch_dtype / dtype).
ModelPlan plan_model(const nlohmann::json& config, const WeightFiles* weights, const PlanOptions& options = {});

// Same for a model folder: config.json, plus the weights' headers when they are there.
ModelPlan plan_model_dir(const std::string& dir, const PlanOptions& options = {});

// True when the folder holds weights (model.safetensors or model.safetensors.index.json).
bool has_weights(const std::string& dir);

// The dtype config.json says the weights are stored in (torch_dtype, or dtype in transformers
// v5; F32 when neither is given). Throws naming the key for an unknown value.
DType config_dtype(const nlohmann::json& config);

// MemAvailable from /proc/meminfo in bytes (an estimate of memory usable without swapping),
// or 0 when it cannot be read.
uint64_t mem_available_bytes(const std::string& meminfo_path = "/proc/meminfo");

// Kept free beside the plan for the program itself, the tokenizer and the kernels' scratch.
constexpr uint64_t kPlanReserveBytes = 256'000'000;

bool plan_fits(const ModelPlan& plan, uint64_t available);
// The longest context whose plan fits in `available` bytes, at most the model's own maximum;
// 0 when not even one position fits.
int64_t largest_context(const ModelPlan& plan, uint64_t available);

// Of the model folders in `dirs` (each with config.json and weights), the one with the most
// weight bytes whose plan at `context` fits in `available`. Folders whose architecture is not
// registered, or whose files are broken, are skipped with a line in `*notes`.
std::optional<std::string> largest_fitting_model(const std::vector<std::string>& dirs, int64_t context,
                                                 uint64_t available, std::vector<std::string>* notes = nullptr);

// "1.23 GB", "456.0 MB", "789 B" (powers of 1000, like the GB/s beside tok/s).
std::string format_bytes(uint64_t bytes);

}  // namespace purellm
