#include "models/generate.hpp"

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>

namespace purellm {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

bool is_eos(const ModelInfo& info, int32_t id) {
  return std::find(info.eos_ids.begin(), info.eos_ids.end(), id) != info.eos_ids.end();
}

std::span<const float> row0(const Tensor& logits) {
  return {logits.ptr<const float>(), static_cast<size_t>(logits.cols())};
}

}  // namespace

std::vector<int32_t> generate(Model& model, Cache& cache, std::span<const int32_t> prompt,
                              const GenerateOptions& options, Sampler& sampler,
                              const TokenCallback& on_token, GenerationStats* stats) {
  if (prompt.empty()) throw std::invalid_argument("the prompt has no tokens");
  const int64_t room = std::min(cache.max_seq(), model.info().max_context) - cache.n_past();
  if (static_cast<int64_t>(prompt.size()) > room)
    throw std::runtime_error("prompt of " + std::to_string(prompt.size()) + " tokens does not fit the " +
                             std::to_string(room) + " positions left in the context");
  // The last generated token is never fed back, so prompt + max_new_tokens - 1 must fit.
  if (static_cast<int64_t>(prompt.size()) + options.max_new_tokens - 1 > room)
    throw std::runtime_error("prompt (" + std::to_string(prompt.size()) + " tokens) + " +
                             std::to_string(options.max_new_tokens) + " new tokens exceed the " +
                             std::to_string(room) + " positions left in the context");
  GenerationStats local;
  GenerationStats& st = stats ? *stats : local;
  st = GenerationStats{};
  st.prompt_tokens = static_cast<int64_t>(prompt.size());

  std::vector<int32_t> history(prompt.begin(), prompt.end());
  std::vector<int32_t> generated;
  if (options.max_new_tokens <= 0) return generated;

  auto start = std::chrono::steady_clock::now();
  Tensor logits = model.forward(prompt, cache, Logits::Last);
  st.prefill_seconds = seconds_since(start);

  start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < options.max_new_tokens; ++i) {
    const int32_t id = sampler.sample(row0(logits), history);
    generated.push_back(id);
    history.push_back(id);
    st.generated_tokens = static_cast<int64_t>(generated.size());
    if (i == 0) start = std::chrono::steady_clock::now();  // decode time excludes the prefill's token
    const bool keep_going = on_token(id);
    if (!keep_going || (options.stop_at_eos && is_eos(model.info(), id)) || i + 1 == options.max_new_tokens) break;
    logits = model.forward(std::span<const int32_t>(&id, 1), cache, Logits::Last);
  }
  st.decode_seconds = seconds_since(start);
  return generated;
}

}  // namespace purellm
