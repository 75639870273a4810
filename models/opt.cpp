// OPT (Meta, 2022): GPT-2's layer with ReLU, separate projections and an offset position table.
//
// Registers: model_type "opt", architectures OPTForCausalLM (opt-125m, -1.3b, -2.7b, ...,
// -66b; not opt-350m, see below). Follows transformers' modeling_opt.py (eager attention).
// Tested on: fixtures/opt-tiny (logits, every hidden state, cached decode, greedy ids).
//
// The shape of one layer (pre-norm, sequential, like GPT-2):
//   h = x + out_proj(attn(self_attn_layer_norm(x)));  x = h + fc2(relu(fc1(final_layer_norm(h))))
// How it differs from GPT-2:
//   - learned positions with an offset of 2: position p reads row p + 2 of embed_positions
//     (rows 0 and 1 were reserved for padding in fairseq), so the table has
//     max_position_embeddings + 2 rows;
//   - separate q/k/v/out projections stored [out, in] (no Conv1D transpose);
//   - MLP activation ReLU (activation_function), biases everywhere (enable_bias);
//   - each layer's second norm is called final_layer_norm; the model's last norm is
//     decoder.final_layer_norm; the head is tied to embed_tokens.
// Refused at load: opt-350m's post-norm layout (`do_layer_norm_before` false) with its
// project_in/project_out (`word_embed_proj_dim` != hidden_size), norms without weights
// (`layer_norm_elementwise_affine` false) and `_remove_final_layer_norm`: no golden covers them.
#include <cmath>
#include <vector>

#include "models/layers.hpp"

namespace purellm {
namespace {

constexpr int64_t kPositionOffset = 2;  // OPTLearnedPositionalEmbedding.offset

struct OptConfig {
  int64_t vocab_size;          // vocab_size
  int hidden_size;             // hidden_size: D
  int ffn_dim;                 // ffn_dim: F
  int n_layers;                // num_hidden_layers
  int n_heads;                 // num_attention_heads
  int64_t max_positions;       // max_position_embeddings (the table has 2 more rows)
  bool bias;                   // enable_bias
  Activation activation;       // activation_function ("relu")
  static constexpr float kLayerNormEps = 1e-5f;  // nn.LayerNorm's default; OPT has no config key

  static OptConfig from_json(const nlohmann::json& j) {
    ConfigReader cfg(j);
    OptConfig c;
    c.vocab_size = cfg.integer({"vocab_size"});
    c.hidden_size = static_cast<int>(cfg.integer({"hidden_size"}));
    c.ffn_dim = static_cast<int>(cfg.integer({"ffn_dim"}));
    c.n_layers = static_cast<int>(cfg.integer({"num_hidden_layers"}));
    c.n_heads = static_cast<int>(cfg.integer({"num_attention_heads"}));
    if (c.hidden_size % c.n_heads) cfg.fail("hidden_size", "must be a multiple of num_attention_heads");
    c.max_positions = cfg.integer({"max_position_embeddings"});
    c.bias = cfg.boolean("enable_bias", true);
    c.activation = parse_activation(cfg, "activation_function", "relu");
    if (!cfg.boolean("do_layer_norm_before", true))
      cfg.fail("do_layer_norm_before", "false (the post-norm layout of opt-350m) is not supported");
    if (cfg.integer({"word_embed_proj_dim"}, c.hidden_size) != c.hidden_size)
      cfg.fail("word_embed_proj_dim", "must equal hidden_size (project_in/project_out are not supported)");
    if (!cfg.boolean("layer_norm_elementwise_affine", true))
      cfg.fail("layer_norm_elementwise_affine", "false (norms without weights) is not supported");
    if (cfg.boolean("_remove_final_layer_norm", false))
      cfg.fail("_remove_final_layer_norm", "true is not supported");
    return c;
  }
};

struct OptLayer {
  Tensor attn_norm_w, attn_norm_b;  // [D]   self_attn_layer_norm
  MatrixStack qkv;                  // [D | D | D, D]  self_attn.{q,k,v}_proj (+ biases)
  Tensor wo, bo;                    // [D, D], [D]     self_attn.out_proj
  Tensor ffn_norm_w, ffn_norm_b;    // [D]   final_layer_norm (the layer's)
  Tensor fc1_w, fc1_b;              // [F, D], [F]  fc1
  Tensor fc2_w, fc2_b;              // [D, F], [D]  fc2
};

struct OptWeights {
  Tensor embed;                     // [V, D]    embed_tokens.weight (also the output head)
  Tensor positions;                 // [P+2, D]  embed_positions.weight
  std::vector<OptLayer> layers;
  Tensor norm_w, norm_b;            // [D]       final_layer_norm (the decoder's)
};

OptWeights load_weights(const OptConfig& c, WeightLoader& w) {
  const int64_t D = c.hidden_size, F = c.ffn_dim;
  auto bias = [&](const std::string& name, int64_t n) { return c.bias ? w.vector(name, n) : Tensor{}; };
  OptWeights g;
  g.embed = w.embedding("embed_tokens.weight", c.vocab_size, D);
  g.positions = w.embedding("embed_positions.weight", c.max_positions + kPositionOffset, D);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    OptLayer L;
    L.attn_norm_w = w.vector(p + "self_attn_layer_norm.weight", D);
    L.attn_norm_b = w.vector(p + "self_attn_layer_norm.bias", D);
    const std::string a = p + "self_attn.";
    L.qkv = w.stack({a + "q_proj", a + "k_proj", a + "v_proj"}, {D, D, D}, D, c.bias);
    L.wo = w.matrix(p + "self_attn.out_proj.weight", D, D);
    L.bo = bias(p + "self_attn.out_proj.bias", D);
    L.ffn_norm_w = w.vector(p + "final_layer_norm.weight", D);
    L.ffn_norm_b = w.vector(p + "final_layer_norm.bias", D);
    L.fc1_w = w.matrix(p + "fc1.weight", F, D);
    L.fc1_b = bias(p + "fc1.bias", F);
    L.fc2_w = w.matrix(p + "fc2.weight", D, F);
    L.fc2_b = bias(p + "fc2.bias", D);
    g.layers.push_back(L);
  }
  g.norm_w = w.vector("final_layer_norm.weight", D);
  g.norm_b = w.vector("final_layer_norm.bias", D);
  return g;
}

class Opt final : public Model {
 public:
  Opt(const OptConfig& c, WeightLoader& loader, ModelInfo info)
      : c_(c), info_(std::move(info)), be_(loader.backend()), w_(load_weights(c, loader)), act_(be_) {
    memory_ = loader.take_memory();
    // Per decoded token: every matrix and vector once, the tied head, one row of each table.
    const uint64_t embed_row = w_.embed.nbytes() / static_cast<uint64_t>(c.vocab_size);
    const uint64_t position_row = w_.positions.nbytes() / static_cast<uint64_t>(w_.positions.rows());
    info_.weight_bytes = loader.bytes_loaded() + w_.embed.nbytes() + w_.positions.nbytes();
    info_.kv_dtype = loader.kv_dtype();
    info_.weight_bytes_per_token = loader.bytes_loaded() + w_.embed.nbytes() + embed_row + position_row;
  }

  const ModelInfo& info() const override { return info_; }

  Cache make_cache(int64_t max_seq) const override {
    return attention_cache(be_, std::min(max_seq, c_.max_positions), c_.n_layers, c_.hidden_size, info_.kv_dtype);
  }

  Tensor forward(std::span<const int32_t> tokens, Cache& cache, Logits which) override {
    const int64_t T = static_cast<int64_t>(tokens.size()), D = c_.hidden_size, pos0 = cache.n_past();
    check_room(cache, T, c_.max_positions);
    Tensor x = act_.get(X, T, D);           // [T, D]  residual stream
    Tensor h = act_.get(H, T, D);           // [T, D]  normed input / branch output
    Tensor qkv = act_.get(QKV, T, 3 * D);   // [T, D | D | D]  q | k | v
    const Tensor q = qkv.cols_view(0, D), k = qkv.cols_view(D, D), v = qkv.cols_view(2 * D, D);
    Tensor att = act_.get(ATT, T, D);       // [T, D]  attention output (heads concatenated)
    Tensor ff = act_.get(FF, T, c_.ffn_dim);  // [T, F]

    position_rows_.resize(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) position_rows_[static_cast<size_t>(t)] = static_cast<int32_t>(pos0 + t + kPositionOffset);
    be_.embed(x, w_.embed, tokens);                // token embeddings
    be_.embed(h, w_.positions, position_rows_);    // position embeddings, rows offset by 2
    be_.add(x, x, h);
    trace(x, "embed");

    AttentionArgs args;
    args.n_heads = args.n_kv_heads = c_.n_heads;
    args.head_dim = c_.hidden_size / c_.n_heads;
    args.pos0 = pos0;
    args.scale = 1.0f / std::sqrt(static_cast<float>(args.head_dim));
    for (int l = 0; l < c_.n_layers; ++l) {
      const OptLayer& L = w_.layers[static_cast<size_t>(l)];
      const LayerCache& kv = cache.layers[static_cast<size_t>(l)];
      // attention block
      be_.layernorm(h, x, L.attn_norm_w, L.attn_norm_b, OptConfig::kLayerNormEps);
      trace(h, "attn_norm", l);
      matmul(be_, qkv, h, L.qkv);                             // [T, 3D]
      append_kv(be_, kv, pos0, k, v);
      args.probs = wants_attention_probs() ? act_.get(PROBS, int64_t{c_.n_heads} * T, pos0 + T).reshape({c_.n_heads, T, pos0 + T}) : Tensor{};
      be_.attention(att, q, kv.k, kv.v, args);                // [T, D]
      trace(att, "attn_out", l);
      if (!args.probs.empty()) trace(args.probs, "attn_probs", l);
      be_.matmul(h, att, L.wo, L.bo);                         // [T, D]
      be_.add(x, x, h);
      trace(x, "attn_residual", l);
      // MLP block
      be_.layernorm(h, x, L.ffn_norm_w, L.ffn_norm_b, OptConfig::kLayerNormEps);
      trace(h, "ffn_norm", l);
      be_.matmul(ff, h, L.fc1_w, L.fc1_b);                    // [T, F]
      apply_activation(be_, c_.activation, ff, ff);
      trace(ff, "ffn_act", l);
      be_.matmul(h, ff, L.fc2_w, L.fc2_b);                    // [T, D]
      be_.add(x, x, h);
      trace(x, "layer_out", l);
    }
    trace(x, "final_norm_input");

    // Only the positions whose logits are wanted go through the final norm and the head.
    const int64_t first = which == Logits::All ? 0 : T - 1;
    const Tensor logits = head(x.rows_view(first, T - first));  // [rows, V]
    cache.advance(T);
    return logits_to_host(be_, logits, host_logits_);
  }

  Tensor project_to_vocab(const Tensor& residual) override {
    check_residual(residual, c_.hidden_size, info_.architecture);
    return logits_to_host(be_, head(residual), host_logits_);
  }

 private:
  enum Slot { X, H, QKV, ATT, FF, LOGITS, PROBS };  // activation buffers

  // The final norm and the output head, as the end of forward() and the logit lens use them:
  // residual stream x [R, D] -> logits [R, V] on the backend.
  Tensor head(const Tensor& x) {
    const Tensor h = act_.get(H, x.rows(), c_.hidden_size);       // [R, D]
    be_.layernorm(h, x, w_.norm_w, w_.norm_b, OptConfig::kLayerNormEps);
    trace(h, "final_norm");
    const Tensor logits = act_.get(LOGITS, x.rows(), c_.vocab_size);  // [R, V]
    be_.matmul(logits, h, w_.embed, Tensor{});  // tied head
    return logits;
  }

  OptConfig c_;
  ModelInfo info_;
  Backend& be_;
  OptWeights w_;
  Activations act_;
  std::vector<std::shared_ptr<void>> memory_;
  std::vector<int32_t> position_rows_;
  AlignedBuffer host_logits_;
};

std::unique_ptr<Model> load_opt(const nlohmann::json& config, const WeightFiles& files, const LoadOptions& options) {
  const OptConfig c = OptConfig::from_json(config);
  // save_pretrained writes "model.decoder."; the original facebook/opt uploads "decoder.".
  WeightLoader loader(files, options, {"model.decoder.", "decoder."});
  ModelInfo info;
  info.architecture = "opt";
  info.model_type = "opt";
  info.vocab_size = c.vocab_size;
  info.max_context = c.max_positions;
  info.n_layers = c.n_layers;
  info.hidden_size = c.hidden_size;
  read_special_ids(ConfigReader(config), info);
  return std::make_unique<Opt>(c, loader, std::move(info));
}

const ModelRegistration registration("opt", {"opt"}, {"OPTForCausalLM"}, load_opt);

}  // namespace
}  // namespace purellm
