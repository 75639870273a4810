// Choosing the next token from logits: greedy, or temperature / top-k / top-p sampling with
// a repetition penalty, in the order transformers' generate() applies them. Deterministic
// for a given seed on every platform (own RNG, no std:: distributions).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace purellm {

struct SamplingOptions {
  bool greedy = false;             // argmax (after the repetition penalty)
  float temperature = 0.8f;        // <= 0 behaves as greedy
  int top_k = 40;                  // keep the k most likely tokens; 0 = off
  float top_p = 0.95f;             // keep the smallest set with cumulative probability >= p; 1 = off
  float repetition_penalty = 1.0f; // > 1 discourages tokens already in the sequence; 1 = off
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  // Picks a token from logits [vocab] given the ids so far (prompt + generated).
  int32_t sample(std::span<const float> logits, std::span<const int32_t> history);
  const SamplingOptions& options() const { return opt_; }

 private:
  double uniform();  // [0, 1), from a splitmix64 stream
  SamplingOptions opt_;
  uint64_t state_;
  std::vector<float> scores_;      // logits after the penalty, reused between calls
  std::vector<int32_t> order_;     // candidate ids, reused
};

}  // namespace purellm
