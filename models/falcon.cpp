// Falcon (TII, 2023): falcon-7b (multi-query) and falcon-40b/180b (grouped KV, two norms).
//
// Registers: model_type "falcon" and the pre-transformers names "RefinedWeb" (40b) and
// "RefinedWebModel" (7b); architectures FalconForCausalLM, RWForCausalLM. Follows
// transformers' modeling_falcon.py (eager attention, rotary path).
// Tested on: fixtures falcon-tiny (7b style) and falcon40b-tiny (40b style): logits, every
// hidden state, cached decode, greedy ids.
//
// The shape of one layer (parallel attention and MLP off the same residual):
//   7b:  n = ln(x);                     x = x + attn(n) + mlp(n)
//   40b: a = ln_attn(x); m = ln_mlp(x); x = x + attn(a) + mlp(m)
// How it differs from GPT-2:
//   - attention and MLP run in parallel on the same input and both add to the residual;
//   - rotary embeddings (rotate_half, theta 10000) instead of learned positions;
//   - few KV heads: 7b has exactly one (multi-query), 40b has num_kv_heads groups;
//   - weights stored [out, in] (no Conv1D transpose), no biases (config `bias`);
//   - MLP activation is the exact erf GELU.
// How it differs from Llama:
//   - LayerNorm with bias, not RMSNorm; GELU MLP (dense_h_to_4h, dense_4h_to_h), not SwiGLU;
//   - one fused query_key_value projection. 7b stores its rows [Hq q heads | k | v]; 40b
//     groups them per KV head, [Hq/Hkv q heads | k_g | v_g] for each group g, so the rows
//     are reordered once at load (FusedQkv) and the matmul output is [all q | all k | all v];
//   - 7b configs often say num_kv_heads = num_attention_heads: with multi_query and the old
//     decoder architecture the model ignores that and uses one KV head;
//   - the output head is tied to word_embeddings.
// Refused at load (no golden covers them, so they fail loudly instead of guessing): ALiBi
// (`alibi`: falcon-rw-1b/7b) and the sequential block (`parallel_attn` false, falcon-rw).
#include <cmath>
#include <vector>

#include "models/layers.hpp"

namespace purellm {
namespace {

struct FalconConfig {
  std::string model_type;   // model_type: falcon | RefinedWeb | RefinedWebModel
  int64_t vocab_size;       // vocab_size
  int hidden_size;          // hidden_size (old: n_embed): D
  int ffn_hidden_size;      // ffn_hidden_size (default 4 * D): F
  int n_layers;             // num_hidden_layers (old: n_layer)
  int n_heads;              // num_attention_heads (old: n_head): Hq
  int n_kv_heads;           // 1 with multi_query on the old architecture, else num_kv_heads (old: n_head_kv)
  int head_dim;             // D / Hq
  bool new_decoder_architecture;  // new_decoder_architecture: grouped qkv rows (40b)
  bool two_norms;           // num_ln_in_parallel_attn == 2 (default with the new architecture): ln_attn + ln_mlp
  bool bias;                // bias: biases on every linear layer
  float layer_norm_epsilon; // layer_norm_epsilon
  int64_t max_positions;    // max_position_embeddings (default 2048)
  RopeConfig rope;          // rope_theta (default 10000) + rope_scaling
  bool tie_word_embeddings; // tie_word_embeddings (default true)
  Activation activation;    // activation ("gelu": exact)

  static FalconConfig from_json(const nlohmann::json& j) {
    ConfigReader cfg(j);
    FalconConfig c;
    c.model_type = cfg.string("model_type", "falcon");
    const bool old_names = c.model_type != "falcon";
    c.vocab_size = cfg.integer({"vocab_size"});
    c.hidden_size = static_cast<int>(cfg.integer({"hidden_size", "n_embed"}));
    c.ffn_hidden_size = static_cast<int>(cfg.integer({"ffn_hidden_size"}, int64_t{4} * c.hidden_size));
    c.n_layers = static_cast<int>(cfg.integer({"num_hidden_layers", "n_layer"}));
    c.n_heads = static_cast<int>(cfg.integer({"num_attention_heads", "n_head"}));
    if (c.hidden_size % c.n_heads) cfg.fail("hidden_size", "must be a multiple of num_attention_heads");
    c.head_dim = c.hidden_size / c.n_heads;
    if (c.head_dim % 2) cfg.fail("hidden_size", "/ num_attention_heads must be even for rotary embeddings");
    c.new_decoder_architecture = cfg.boolean("new_decoder_architecture", false);
    c.n_kv_heads = kv_heads(cfg, c, cfg.boolean("multi_query", true));
    // transformers' FalconConfig defaults parallel_attn to true; the RefinedWeb remote code to false.
    if (!cfg.boolean("parallel_attn", !old_names))
      cfg.fail("parallel_attn", "false (the sequential falcon-rw block) is not supported");
    if (cfg.boolean("alibi", false))
      cfg.fail("alibi", "true (ALiBi positions, falcon-rw) is not supported: only rotary Falcon models are");
    const int64_t n_ln = cfg.integer({"num_ln_in_parallel_attn"}, c.new_decoder_architecture ? 2 : 1, 1, 2);
    if (n_ln == 2 && !c.new_decoder_architecture)
      cfg.fail("num_ln_in_parallel_attn", "2 needs new_decoder_architecture (transformers ignores it otherwise)");
    c.two_norms = c.new_decoder_architecture && n_ln == 2;
    c.bias = cfg.boolean("bias", false);
    c.layer_norm_epsilon = static_cast<float>(cfg.number({"layer_norm_epsilon"}, 1e-5, 0.0, 1.0));
    c.max_positions = cfg.integer({"max_position_embeddings"}, 2048);
    c.rope = read_rope_config(cfg);
    c.tie_word_embeddings = cfg.boolean("tie_word_embeddings", true);
    c.activation = parse_activation(cfg, "activation", "gelu");
    return c;
  }

  // The KV heads the model really uses (transformers' FalconAttention.num_kv_heads).
  static int kv_heads(const ConfigReader& cfg, const FalconConfig& c, bool multi_query) {
    if (!c.new_decoder_architecture) return multi_query ? 1 : c.n_heads;  // num_kv_heads is ignored here
    const int n = static_cast<int>(cfg.integer({"num_kv_heads", "n_head_kv"}, c.n_heads));
    if (c.n_heads % n) cfg.fail(cfg.has("num_kv_heads") ? "num_kv_heads" : "n_head_kv", "must divide num_attention_heads");
    return n;
  }
};

struct FalconLayer {
  Tensor attn_norm_w, attn_norm_b;  // [D]  ln_attn (two norms) or input_layernorm
  Tensor mlp_norm_w, mlp_norm_b;    // [D]  ln_mlp (two norms only)
  Tensor qkv_w, qkv_b;              // [(Hq+2Hkv)*d, D], rows reordered to q | k | v   self_attention.query_key_value
  Tensor dense_w, dense_b;          // [D, Hq*d]   self_attention.dense
  Tensor fc_w, fc_b;                // [F, D]      mlp.dense_h_to_4h
  Tensor proj_w, proj_b;            // [D, F]      mlp.dense_4h_to_h
};

struct FalconWeights {
  Tensor embed;                     // [V, D]  word_embeddings.weight (also the head when tied)
  std::vector<FalconLayer> layers;
  Tensor ln_f_w, ln_f_b;            // [D]     ln_f
  Tensor lm_head;                   // [V, D]  lm_head.weight, or embed when tied
};

FalconWeights load_weights(const FalconConfig& c, WeightLoader& w) {
  const int64_t D = c.hidden_size, F = c.ffn_hidden_size;
  const FusedQkv qkv{c.n_kv_heads, c.n_heads / c.n_kv_heads, c.head_dim};
  auto bias = [&](const std::string& name, int64_t n) { return c.bias ? w.vector(name, n) : Tensor{}; };
  FalconWeights g;
  g.embed = w.embedding("word_embeddings.weight", c.vocab_size, D);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    const std::string norm = c.two_norms ? "ln_attn" : "input_layernorm";
    FalconLayer L;
    L.attn_norm_w = w.vector(p + norm + ".weight", D);
    L.attn_norm_b = w.vector(p + norm + ".bias", D);
    if (c.two_norms) {
      L.mlp_norm_w = w.vector(p + "ln_mlp.weight", D);
      L.mlp_norm_b = w.vector(p + "ln_mlp.bias", D);
    }
    L.qkv_w = w.fused_qkv(p + "self_attention.query_key_value.weight", qkv, D);
    if (c.bias) L.qkv_b = w.fused_qkv_bias(p + "self_attention.query_key_value.bias", qkv);
    L.dense_w = w.matrix(p + "self_attention.dense.weight", D, D);
    L.dense_b = bias(p + "self_attention.dense.bias", D);
    L.fc_w = w.matrix(p + "mlp.dense_h_to_4h.weight", F, D);
    L.fc_b = bias(p + "mlp.dense_h_to_4h.bias", F);
    L.proj_w = w.matrix(p + "mlp.dense_4h_to_h.weight", D, F);
    L.proj_b = bias(p + "mlp.dense_4h_to_h.bias", D);
    g.layers.push_back(L);
  }
  g.ln_f_w = w.vector("ln_f.weight", D);
  g.ln_f_b = w.vector("ln_f.bias", D);
  g.lm_head = c.tie_word_embeddings ? g.embed : w.matrix("lm_head.weight", c.vocab_size, D);
  return g;
}

class Falcon final : public Model {
 public:
  Falcon(const FalconConfig& c, WeightLoader& loader, ModelInfo info)
      : c_(c), info_(std::move(info)), be_(loader.backend()), w_(load_weights(c, loader)), act_(be_),
        rope_(be_, c.head_dim, c.max_positions, c.rope) {
    memory_ = loader.take_memory();
    const uint64_t embed_row = w_.embed.nbytes() / static_cast<uint64_t>(c.vocab_size);
    const uint64_t tied_head = c.tie_word_embeddings ? w_.embed.nbytes() : 0;
    info_.weight_bytes = loader.bytes_loaded() + w_.embed.nbytes();
    info_.kv_dtype = loader.kv_dtype();
    info_.weight_bytes_per_token = loader.bytes_loaded() + tied_head + embed_row;
  }

  const ModelInfo& info() const override { return info_; }

  Cache make_cache(int64_t max_seq) const override {
    return attention_cache(be_, std::min(max_seq, c_.max_positions), c_.n_layers, int64_t{c_.n_kv_heads} * c_.head_dim, info_.kv_dtype);
  }

  Tensor forward(std::span<const int32_t> tokens, Cache& cache, Logits which) override {
    const int64_t T = static_cast<int64_t>(tokens.size()), D = c_.hidden_size, pos0 = cache.n_past();
    const int64_t q_dim = int64_t{c_.n_heads} * c_.head_dim, kv_dim = int64_t{c_.n_kv_heads} * c_.head_dim;
    check_room(cache, T, c_.max_positions);
    const RopeTables& rope = rope_.upto(pos0 + T);
    Tensor x = act_.get(X, T, D);                        // [T, D]  residual stream
    Tensor h = act_.get(H, T, D);                        // [T, D]  attention input (normed)
    Tensor m = c_.two_norms ? act_.get(M, T, D) : h;     // [T, D]  MLP input (the same norm on 7b)
    Tensor qkv = act_.get(QKV, T, q_dim + 2 * kv_dim);   // [T, (Hq+2Hkv)*d] = q | k | v
    Tensor att = act_.get(ATT, T, q_dim);                // [T, Hq*d]
    Tensor o = act_.get(O, T, D);                        // [T, D]  a branch's output
    Tensor ff = act_.get(FF, T, c_.ffn_hidden_size);     // [T, F]
    const Tensor q = qkv.cols_view(0, q_dim);

    be_.embed(x, w_.embed, tokens);
    trace(x, "embed");

    AttentionArgs args;
    args.n_heads = c_.n_heads;
    args.n_kv_heads = c_.n_kv_heads;
    args.head_dim = c_.head_dim;
    args.pos0 = pos0;
    args.scale = 1.0f / std::sqrt(static_cast<float>(c_.head_dim));
    for (int l = 0; l < c_.n_layers; ++l) {
      const FalconLayer& L = w_.layers[static_cast<size_t>(l)];
      const LayerCache& kv = cache.layers[static_cast<size_t>(l)];
      const Tensor k = qkv.cols_view(q_dim, kv_dim), v = qkv.cols_view(q_dim + kv_dim, kv_dim);
      // both branches read the residual stream as it enters the layer
      be_.layernorm(h, x, L.attn_norm_w, L.attn_norm_b, c_.layer_norm_epsilon);
      trace(h, "attn_norm", l);
      if (c_.two_norms) {
        be_.layernorm(m, x, L.mlp_norm_w, L.mlp_norm_b, c_.layer_norm_epsilon);
        trace(m, "ffn_norm", l);
      }
      // attention branch
      be_.matmul(qkv, h, L.qkv_w, L.qkv_b);          // [T, (Hq+2Hkv)*d]
      trace(qkv, "qkv", l);
      be_.rope(q, c_.n_heads, c_.head_dim, c_.head_dim, pos0, rope.cos, rope.sin);
      be_.rope(k, c_.n_kv_heads, c_.head_dim, c_.head_dim, pos0, rope.cos, rope.sin);
      trace(q, "q_rope", l);
      trace(k, "k_rope", l);
      append_kv(be_, kv, pos0, k, v);
      args.probs = wants_attention_probs() ? act_.get(PROBS, int64_t{c_.n_heads} * T, pos0 + T).reshape({c_.n_heads, T, pos0 + T}) : Tensor{};
      be_.attention(att, q, kv.k, kv.v, args);       // [T, Hq*d]
      trace(att, "attn_out", l);
      if (!args.probs.empty()) trace(args.probs, "attn_probs", l);
      be_.matmul(o, att, L.dense_w, L.dense_b);      // [T, D]
      be_.add(x, x, o);
      // MLP branch, on the norm taken before the attention branch was added
      be_.matmul(ff, m, L.fc_w, L.fc_b);             // [T, F]
      apply_activation(be_, c_.activation, ff, ff);
      trace(ff, "ffn_act", l);
      be_.matmul(o, ff, L.proj_w, L.proj_b);         // [T, D]
      be_.add(x, x, o);
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
  enum Slot { X, H, M, QKV, ATT, O, FF, LOGITS, PROBS };  // activation buffers

  // The final norm and the output head, as the end of forward() and the logit lens use them:
  // residual stream x [R, D] -> logits [R, V] on the backend.
  Tensor head(const Tensor& x) {
    const Tensor h = act_.get(H, x.rows(), c_.hidden_size);       // [R, D]
    be_.layernorm(h, x, w_.ln_f_w, w_.ln_f_b, c_.layer_norm_epsilon);
    trace(h, "final_norm");
    const Tensor logits = act_.get(LOGITS, x.rows(), c_.vocab_size);  // [R, V]
    be_.matmul(logits, h, w_.lm_head, Tensor{});
    return logits;
  }

  FalconConfig c_;
  ModelInfo info_;
  Backend& be_;
  FalconWeights w_;
  Activations act_;
  RopeCache rope_;
  std::vector<std::shared_ptr<void>> memory_;
  AlignedBuffer host_logits_;
};

std::unique_ptr<Model> load_falcon(const nlohmann::json& config, const WeightFiles& files,
                                   const LoadOptions& options) {
  const FalconConfig c = FalconConfig::from_json(config);
  WeightLoader loader(files, options, {"transformer.", ""});
  ModelInfo info;
  info.architecture = "falcon";
  info.model_type = c.model_type;
  info.vocab_size = c.vocab_size;
  info.max_context = c.max_positions;
  info.n_layers = c.n_layers;
  info.hidden_size = c.hidden_size;
  read_special_ids(ConfigReader(config), info);
  return std::make_unique<Falcon>(c, loader, std::move(info));
}

const ModelRegistration registration("falcon", {"falcon", "RefinedWeb", "RefinedWebModel"},
                                     {"FalconForCausalLM", "RWForCausalLM"}, load_falcon);

}  // namespace
}  // namespace purellm
