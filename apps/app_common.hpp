// Pieces every app shares: finding a model by folder or alias, parsing --prompt-ids, and
// reading process statistics. No model-specific code lives in apps/.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tensor/dtype.hpp"

namespace purellm::app {

// A model folder on disk, and its models.json entry when it was named by alias.
struct ResolvedModel {
  std::string dir;
  std::string alias;          // empty when a path was given
  nlohmann::json entry;       // models.json entry (null when none)
};

// `arg` is a folder (used as is) or an alias from models.json, looked up in the models
// folder ($PURELLM_MODELS, else models/ at the repository root). Throws a message with the
// exact `python3 models_download.py ...` command when the alias is known but not downloaded.
ResolvedModel resolve_model(const std::string& arg);

// The folder aliases are downloaded to: $PURELLM_MODELS, else models/ at the repository root.
std::string models_dir();

// Folders in models_dir() holding config.json and weights, sorted.
std::vector<std::string> downloaded_models();

// models.json from the repository root ($PURELLM_MODELS_JSON overrides); null if absent.
nlohmann::json load_models_json();

// "1,2,3" -> ids; every id must be a decimal integer in [0, vocab). Throws naming the bad item.
std::vector<int32_t> parse_prompt_ids(std::string_view text, int64_t vocab_size);

// Peak resident set size of this process in bytes.
uint64_t peak_rss_bytes();

// Strict number parsing for flags: throws "flag: expected ..." on garbage or out-of-range.
int64_t parse_int(std::string_view flag, std::string_view value, int64_t min, int64_t max);
double parse_float(std::string_view flag, std::string_view value, double min, double max);
// --dtype: a weight dtype (f32, f16, bf16, q8_0, q4_0), else a message naming the choices.
DType parse_weight_dtype(std::string_view value);
// --kv-dtype: "f32" or "f16" (the attention cache's dtype), else a message naming the choices.
DType parse_kv_dtype(std::string_view value);

}  // namespace purellm::app
