// Learning mode: record every named intermediate of a forward pass and write them to a
// safetensors file (`ask --trace FILE`, `inspect --trace FILE`).
//
// Each model calls trace(x, "layer_out", 3) after an op; the recorder keeps a host F32 copy
// named "layer_out.3" ("embed", "final_norm" outside the layer stack). Activations are
// [T, width]; attention probabilities (only computed when asked for) are
// "attn_probs.N" [heads, T, keys]. Names a model file uses: embed, attn_norm, qkv, q_rope,
// k_rope, attn_out, attn_probs, attn_residual, ffn_norm, ffn_act, layer_out,
// final_norm_input, final_norm; Mamba2 layers: ssm_in_proj, ssm_conv, ssm_scan, ssm_norm,
// ssm_out; MoE layers: moe_router, moe_out. With no tracer set a model pays one null check per name.
#pragma once

#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "models/model.hpp"

namespace purellm {

// "layer_out.3", or the bare name for layer -1.
std::string trace_name(std::string_view name, int layer);

class TraceRecorder final : public Tracer {
 public:
  struct Entry {
    std::string name;
    std::vector<int64_t> shape;
    std::vector<float> values;  // row-major
  };

  explicit TraceRecorder(bool attention_probs = false) : attention_probs_(attention_probs) {}
  // Copies `t` (an F32 host tensor, any row stride). A name seen before is kept as first
  // recorded: one trace describes one forward call.
  void record(std::string_view name, int layer, const Tensor& t) override;
  bool wants_attention_probs() const override { return attention_probs_; }

  const std::vector<Entry>& entries() const { return entries_; }
  const Entry* find(const std::string& name) const;
  // A recorded tensor as a view (valid while the recorder lives): e.g. a residual for
  // Model::project_to_vocab. Throws naming the tensor when it was not recorded.
  Tensor view(const std::string& name) const;

  // Writes every entry (F32) and the prompt as "input_ids" (I64 [T]) to `path`, with
  // `metadata` in the header.
  void write(const std::string& path, std::span<const int32_t> input_ids,
             const std::map<std::string, std::string>& metadata = {}) const;

 private:
  bool attention_probs_;
  std::vector<Entry> entries_;
  std::map<std::string, size_t, std::less<>> index_;
};

}  // namespace purellm
