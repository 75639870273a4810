#include "models/sampling.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

namespace purellm {

Sampler::Sampler(const SamplingOptions& options) : opt_(options), state_(options.seed) {
  if (!(opt_.top_p > 0.0f && opt_.top_p <= 1.0f))
    throw std::invalid_argument("top-p must be in (0, 1], got " + std::to_string(opt_.top_p));
  if (opt_.top_k < 0) throw std::invalid_argument("top-k must be >= 0, got " + std::to_string(opt_.top_k));
  if (!(opt_.repetition_penalty > 0.0f))
    throw std::invalid_argument("repetition penalty must be > 0, got " + std::to_string(opt_.repetition_penalty));
  if (!std::isfinite(opt_.temperature))
    throw std::invalid_argument("temperature must be a finite number");
}

double Sampler::uniform() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> history) {
  const auto V = static_cast<int32_t>(logits.size());
  scores_.assign(logits.begin(), logits.end());
  // Repetition penalty (CTRL / transformers): divide positive logits, multiply negative ones.
  if (opt_.repetition_penalty != 1.0f)
    for (int32_t id : history)
      if (id >= 0 && id < V) {
        float& s = scores_[static_cast<size_t>(id)];
        s = s > 0 ? s / opt_.repetition_penalty : s * opt_.repetition_penalty;
      }
  if (opt_.greedy || opt_.temperature <= 0.0f)
    return static_cast<int32_t>(std::max_element(scores_.begin(), scores_.end()) - scores_.begin());

  // Candidates sorted by score, cut to top-k.
  order_.resize(static_cast<size_t>(V));
  std::iota(order_.begin(), order_.end(), 0);
  const size_t k = opt_.top_k > 0 ? std::min<size_t>(static_cast<size_t>(opt_.top_k), order_.size()) : order_.size();
  auto by_score = [&](int32_t a, int32_t b) { return scores_[static_cast<size_t>(a)] > scores_[static_cast<size_t>(b)]; };
  std::partial_sort(order_.begin(), order_.begin() + static_cast<std::ptrdiff_t>(k), order_.end(), by_score);
  order_.resize(k);

  // Softmax of score / temperature over the candidates (scores_ now holds probabilities).
  const float top = scores_[static_cast<size_t>(order_[0])];
  double sum = 0.0;
  for (int32_t id : order_) {
    float& s = scores_[static_cast<size_t>(id)];
    s = std::exp((s - top) / opt_.temperature);
    sum += s;
  }
  // Top-p: the smallest prefix whose probability reaches top_p (at least one token).
  size_t keep = order_.size();
  if (opt_.top_p < 1.0f) {
    double cum = 0.0;
    for (size_t i = 0; i < order_.size(); ++i) {
      cum += scores_[static_cast<size_t>(order_[i])] / sum;
      if (cum >= opt_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept = 0.0;
  for (size_t i = 0; i < keep; ++i) kept += scores_[static_cast<size_t>(order_[i])];
  const double r = uniform() * kept;
  double cum = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    cum += scores_[static_cast<size_t>(order_[i])];
    if (r < cum) return order_[i];
  }
  return order_[keep - 1];
}

}  // namespace purellm
