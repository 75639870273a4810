// GPT-NeoX (EleutherAI, 2022): Pythia, GPT-NeoX-20B and their fine-tunes.
//
// Registers: model_type "gpt_neox", architectures GPTNeoXForCausalLM (pythia-70m ... 12b,
// gpt-neox-20b). Follows transformers' modeling_gpt_neox.py (eager attention).
// Tested on: fixtures/gpt-neox-tiny (logits, every hidden state, cached decode, greedy ids).
//
// The shape of one layer (parallel residual):
//   x = x + attn(input_layernorm(x)) + mlp(post_attention_layernorm(x))
// How it differs from GPT-2:
//   - attention and MLP read the same residual (each through its own LayerNorm) and both add
//     to it;
//   - rotary embeddings on only the first rotary_pct of each head's dims (partial rotary,
//     rotate_half inside those dims), no learned positions;
//   - query_key_value is interleaved per head, stored rows [q_h | k_h | v_h] for each head h;
//     reordered once at load (FusedQkv) so the matmul output is [all q | all k | all v];
//   - weights stored [out, in]; MLP activation exact GELU (hidden_act "gelu");
//   - an untied output head, embed_out (outside the gpt_neox. prefix).
// Refused at load: the sequential block (`use_parallel_residual` false): no golden covers it.
#include <cmath>
#include <vector>

#include "models/layers.hpp"

namespace purellm {
namespace {

struct NeoxConfig {
  int64_t vocab_size;         // vocab_size
  int hidden_size;            // hidden_size: D
  int intermediate_size;      // intermediate_size: F
  int n_layers;               // num_hidden_layers
  int n_heads;                // num_attention_heads
  int head_dim;               // D / n_heads
  int rot_dims;               // int(head_dim * rotary_pct) (v5: partial_rotary_factor)
  int64_t max_positions;      // max_position_embeddings
  float layer_norm_eps;       // layer_norm_eps
  RopeConfig rope;            // rope_theta (v4.30-: rotary_emb_base) + rope_scaling
  bool attention_bias;        // attention_bias: biases on query_key_value and dense
  bool tie_word_embeddings;   // tie_word_embeddings: embed_out = embed_in
  Activation activation;      // hidden_act ("gelu": exact)

  static NeoxConfig from_json(const nlohmann::json& j) {
    ConfigReader cfg(j);
    NeoxConfig c;
    c.vocab_size = cfg.integer({"vocab_size"});
    c.hidden_size = static_cast<int>(cfg.integer({"hidden_size"}));
    c.intermediate_size = static_cast<int>(cfg.integer({"intermediate_size"}));
    c.n_layers = static_cast<int>(cfg.integer({"num_hidden_layers"}));
    c.n_heads = static_cast<int>(cfg.integer({"num_attention_heads"}));
    if (c.hidden_size % c.n_heads) cfg.fail("hidden_size", "must be a multiple of num_attention_heads");
    c.head_dim = c.hidden_size / c.n_heads;
    const double pct = cfg.number({"partial_rotary_factor", "rotary_pct"}, 0.25, 0.0, 1.0);
    c.rot_dims = static_cast<int>(c.head_dim * pct);  // transformers truncates the same way
    if (c.rot_dims < 2 || c.rot_dims % 2)
      cfg.fail(cfg.has("partial_rotary_factor") ? "partial_rotary_factor" : "rotary_pct",
               "must give an even number (>= 2) of rotary dims per head, got " + std::to_string(c.rot_dims));
    c.max_positions = cfg.integer({"max_position_embeddings"}, 2048);
    c.layer_norm_eps = static_cast<float>(cfg.number({"layer_norm_eps"}, 1e-5, 0.0, 1.0));
    c.rope = read_rope_config(cfg, cfg.number({"rotary_emb_base"}, 10000.0, 1e-9));
    c.attention_bias = cfg.boolean("attention_bias", true);
    c.tie_word_embeddings = cfg.boolean("tie_word_embeddings", false);
    c.activation = parse_activation(cfg, "hidden_act", "gelu");
    if (!cfg.boolean("use_parallel_residual", true))
      cfg.fail("use_parallel_residual", "false (the sequential block) is not supported");
    return c;
  }
};

struct NeoxLayer {
  Tensor attn_norm_w, attn_norm_b;  // [D]        input_layernorm
  Tensor qkv_w, qkv_b;              // [3D, D], [3D]  attention.query_key_value (reordered to q | k | v)
  Tensor dense_w, dense_b;          // [D, D], [D]    attention.dense
  Tensor ffn_norm_w, ffn_norm_b;    // [D]        post_attention_layernorm
  Tensor fc_w, fc_b;                // [F, D], [F]    mlp.dense_h_to_4h
  Tensor proj_w, proj_b;            // [D, F], [D]    mlp.dense_4h_to_h
};

struct NeoxWeights {
  Tensor embed;                     // [V, D]  gpt_neox.embed_in.weight
  std::vector<NeoxLayer> layers;
  Tensor norm_w, norm_b;            // [D]     gpt_neox.final_layer_norm
  Tensor head;                      // [V, D]  embed_out.weight, or embed when tied
};

NeoxWeights load_weights(const NeoxConfig& c, WeightLoader& w) {
  const int64_t D = c.hidden_size, F = c.intermediate_size;
  const FusedQkv qkv{c.n_heads, 1, c.head_dim};  // one group per head: [q_h | k_h | v_h]
  auto bias = [&](const std::string& name, int64_t n) { return c.attention_bias ? w.vector(name, n) : Tensor{}; };
  NeoxWeights g;
  g.embed = w.embedding("gpt_neox.embed_in.weight", c.vocab_size, D);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "gpt_neox.layers." + std::to_string(l) + ".";
    NeoxLayer L;
    L.attn_norm_w = w.vector(p + "input_layernorm.weight", D);
    L.attn_norm_b = w.vector(p + "input_layernorm.bias", D);
    L.qkv_w = w.fused_qkv(p + "attention.query_key_value.weight", qkv, D);
    if (c.attention_bias) L.qkv_b = w.fused_qkv_bias(p + "attention.query_key_value.bias", qkv);
    L.dense_w = w.matrix(p + "attention.dense.weight", D, D);
    L.dense_b = bias(p + "attention.dense.bias", D);
    L.ffn_norm_w = w.vector(p + "post_attention_layernorm.weight", D);
    L.ffn_norm_b = w.vector(p + "post_attention_layernorm.bias", D);
    L.fc_w = w.matrix(p + "mlp.dense_h_to_4h.weight", F, D);
    L.fc_b = w.vector(p + "mlp.dense_h_to_4h.bias", F);
    L.proj_w = w.matrix(p + "mlp.dense_4h_to_h.weight", D, F);
    L.proj_b = w.vector(p + "mlp.dense_4h_to_h.bias", D);
    g.layers.push_back(L);
  }
  g.norm_w = w.vector("gpt_neox.final_layer_norm.weight", D);
  g.norm_b = w.vector("gpt_neox.final_layer_norm.bias", D);
  g.head = c.tie_word_embeddings ? g.embed : w.matrix("embed_out.weight", c.vocab_size, D);
  return g;
}

class GptNeox final : public Model {
 public:
  GptNeox(const NeoxConfig& c, WeightLoader& loader, ModelInfo info)
      : c_(c), info_(std::move(info)), be_(loader.backend()), w_(load_weights(c, loader)), act_(be_),
        rope_(be_, c.rot_dims, c.max_positions, c.rope) {
    memory_ = loader.take_memory();
    const uint64_t embed_row = w_.embed.nbytes() / static_cast<uint64_t>(c.vocab_size);
    const uint64_t tied_head = c.tie_word_embeddings ? w_.embed.nbytes() : 0;
    info_.weight_bytes = loader.bytes_loaded() + w_.embed.nbytes();
    info_.kv_dtype = loader.kv_dtype();
    info_.weight_bytes_per_token = loader.bytes_loaded() + tied_head + embed_row;
  }

  const ModelInfo& info() const override { return info_; }

  Cache make_cache(int64_t max_seq) const override {
    return attention_cache(be_, std::min(max_seq, c_.max_positions), c_.n_layers, c_.hidden_size, info_.kv_dtype);
  }

  Tensor forward(std::span<const int32_t> tokens, Cache& cache, Logits which) override {
    const int64_t T = static_cast<int64_t>(tokens.size()), D = c_.hidden_size, pos0 = cache.n_past();
    check_room(cache, T, c_.max_positions);
    const RopeTables& rope = rope_.upto(pos0 + T);
    Tensor x = act_.get(X, T, D);                          // [T, D]  residual stream
    Tensor h = act_.get(H, T, D);                          // [T, D]  a normed input
    Tensor qkv = act_.get(QKV, T, 3 * D);                  // [T, 3D] = q | k | v
    Tensor att = act_.get(ATT, T, D);                      // [T, D]
    Tensor o = act_.get(O, T, D);                          // [T, D]  attention branch output
    Tensor ff = act_.get(FF, T, c_.intermediate_size);     // [T, F]
    const Tensor q = qkv.cols_view(0, D);

    be_.embed(x, w_.embed, tokens);
    trace(x, "embed");

    AttentionArgs args;
    args.n_heads = args.n_kv_heads = c_.n_heads;
    args.head_dim = c_.head_dim;
    args.pos0 = pos0;
    args.scale = 1.0f / std::sqrt(static_cast<float>(c_.head_dim));
    for (int l = 0; l < c_.n_layers; ++l) {
      const NeoxLayer& L = w_.layers[static_cast<size_t>(l)];
      const LayerCache& kv = cache.layers[static_cast<size_t>(l)];
      const Tensor k = qkv.cols_view(D, D), v = qkv.cols_view(2 * D, D);
      // attention branch
      be_.layernorm(h, x, L.attn_norm_w, L.attn_norm_b, c_.layer_norm_eps);
      trace(h, "attn_norm", l);
      be_.matmul(qkv, h, L.qkv_w, L.qkv_b);          // [T, 3D]
      trace(qkv, "qkv", l);
      be_.rope(q, c_.n_heads, c_.head_dim, c_.rot_dims, pos0, rope.cos, rope.sin);  // first rot_dims of each head
      be_.rope(k, c_.n_heads, c_.head_dim, c_.rot_dims, pos0, rope.cos, rope.sin);
      trace(q, "q_rope", l);
      trace(k, "k_rope", l);
      append_kv(be_, kv, pos0, k, v);
      args.probs = wants_attention_probs() ? act_.get(PROBS, int64_t{c_.n_heads} * T, pos0 + T).reshape({c_.n_heads, T, pos0 + T}) : Tensor{};
      be_.attention(att, q, kv.k, kv.v, args);       // [T, D]
      trace(att, "attn_out", l);
      if (!args.probs.empty()) trace(args.probs, "attn_probs", l);
      be_.matmul(o, att, L.dense_w, L.dense_b);      // [T, D]
      // MLP branch, on the same (not yet updated) residual
      be_.layernorm(h, x, L.ffn_norm_w, L.ffn_norm_b, c_.layer_norm_eps);
      trace(h, "ffn_norm", l);
      be_.matmul(ff, h, L.fc_w, L.fc_b);             // [T, F]
      apply_activation(be_, c_.activation, ff, ff);
      trace(ff, "ffn_act", l);
      be_.matmul(h, ff, L.proj_w, L.proj_b);         // [T, D]
      be_.add(x, x, o);                              // x + attn + mlp
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
  enum Slot { X, H, QKV, ATT, O, FF, LOGITS, PROBS };  // activation buffers

  // The final norm and the output head, as the end of forward() and the logit lens use them:
  // residual stream x [R, D] -> logits [R, V] on the backend.
  Tensor head(const Tensor& x) {
    const Tensor h = act_.get(H, x.rows(), c_.hidden_size);       // [R, D]
    be_.layernorm(h, x, w_.norm_w, w_.norm_b, c_.layer_norm_eps);
    trace(h, "final_norm");
    const Tensor logits = act_.get(LOGITS, x.rows(), c_.vocab_size);  // [R, V]
    be_.matmul(logits, h, w_.head, Tensor{});
    return logits;
  }

  NeoxConfig c_;
  ModelInfo info_;
  Backend& be_;
  NeoxWeights w_;
  Activations act_;
  RopeCache rope_;
  std::vector<std::shared_ptr<void>> memory_;
  AlignedBuffer host_logits_;
};

std::unique_ptr<Model> load_gpt_neox(const nlohmann::json& config, const WeightFiles& files,
                                     const LoadOptions& options) {
  const NeoxConfig c = NeoxConfig::from_json(config);
  WeightLoader loader(files, options);  // names carry their own prefix (gpt_neox. vs embed_out)
  ModelInfo info;
  info.architecture = "gpt_neox";
  info.model_type = "gpt_neox";
  info.vocab_size = c.vocab_size;
  info.max_context = c.max_positions;
  info.n_layers = c.n_layers;
  info.hidden_size = c.hidden_size;
  read_special_ids(ConfigReader(config), info);
  return std::make_unique<GptNeox>(c, loader, std::move(info));
}

const ModelRegistration registration("gpt_neox", {"gpt_neox"}, {"GPTNeoXForCausalLM"}, load_gpt_neox);

}  // namespace
}  // namespace purellm
