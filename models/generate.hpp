// The generation loop: prefill the prompt in one forward call (GEMM path), then decode one
// token per call (GEMV path) until an end-of-sequence id or the token budget. Model-agnostic:
// it only sees the Model interface and a Sampler.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "models/model.hpp"
#include "models/sampling.hpp"

namespace purellm {

struct GenerationStats {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;  // time of the decode steps (every generated token after the first)
  double prefill_tokens_per_second() const { return prefill_seconds > 0 ? prompt_tokens / prefill_seconds : 0.0; }
  double decode_tokens_per_second() const {
    return decode_seconds > 0 && generated_tokens > 1 ? (generated_tokens - 1) / decode_seconds : 0.0;
  }
};

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  bool stop_at_eos = true;
};

// Called with each new token as soon as it is chosen; return false to stop early.
using TokenCallback = std::function<bool(int32_t id)>;

// Continues `cache` (which may already hold earlier turns) with `prompt`, then samples up to
// max_new_tokens. Returns the generated ids (an end-of-sequence id is included when hit).
std::vector<int32_t> generate(Model& model, Cache& cache, std::span<const int32_t> prompt,
                              const GenerateOptions& options, Sampler& sampler,
                              const TokenCallback& on_token, GenerationStats* stats = nullptr);

}  // namespace purellm
