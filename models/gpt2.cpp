// GPT-2 (OpenAI, 2019): the decoder-only transformer every later model modifies.
//
// Registers: model_type "gpt2", architectures GPT2LMHeadModel (gpt2, gpt2-medium/-large/-xl,
// distilgpt2, DialoGPT). Follows transformers' modeling_gpt2.py (eager attention).
// Tested on: fixtures/gpt2-tiny (logits, every hidden state, cached decode, greedy ids).
//
// The shape of one layer (pre-norm, sequential):
//   h = x + attn(ln_1(x));  x = h + mlp(ln_2(h))
// Quirks worth knowing:
//   - learned absolute position embeddings (wpe) added to the token embeddings;
//   - weights are Conv1D, stored [in, out]: transposed once at load so every matmul reads
//     W as [out, in] with contiguous rows (the layout the GEMV kernel streams fastest);
//   - c_attn is one fused projection whose output is [q | k | v], heads contiguous in each;
//   - LayerNorm with bias everywhere; MLP activation "gelu_new" = the tanh approximation;
//   - the output head is tied to the token embedding (wte);
//   - checkpoints name tensors with or without the "transformer." prefix; the old
//     attn.bias / attn.masked_bias buffers (causal masks) are ignored.
#include <cmath>
#include <vector>

#include "models/layers.hpp"

namespace purellm {
namespace {

struct Gpt2Config {
  int64_t vocab_size;     // vocab_size
  int64_t n_positions;    // n_positions: learned position rows = max context
  int n_embd;             // n_embd: D, the width of the residual stream
  int n_layer;            // n_layer
  int n_head;             // n_head: D / n_head = head dim
  int n_inner;            // n_inner (null: 4 * n_embd): F, the MLP width
  float layer_norm_epsilon;           // layer_norm_epsilon
  Activation activation;              // activation_function ("gelu_new")
  bool scale_attn_weights;            // scale_attn_weights: scores / sqrt(head_dim)
  bool scale_attn_by_inverse_layer_idx;  // scores also / (layer + 1)

  static Gpt2Config from_json(const nlohmann::json& j) {
    ConfigReader cfg(j);
    Gpt2Config c;
    c.vocab_size = cfg.integer({"vocab_size"});
    c.n_positions = cfg.integer({"n_positions", "n_ctx"});
    c.n_embd = static_cast<int>(cfg.integer({"n_embd"}));
    c.n_layer = static_cast<int>(cfg.integer({"n_layer"}));
    c.n_head = static_cast<int>(cfg.integer({"n_head"}));
    c.n_inner = static_cast<int>(cfg.integer({"n_inner"}, 4 * c.n_embd));
    c.layer_norm_epsilon = static_cast<float>(cfg.number({"layer_norm_epsilon"}, 1e-5, 0.0, 1.0));
    c.activation = parse_activation(cfg, "activation_function", "gelu_new");
    c.scale_attn_weights = cfg.boolean("scale_attn_weights", true);
    c.scale_attn_by_inverse_layer_idx = cfg.boolean("scale_attn_by_inverse_layer_idx", false);
    if (c.n_embd % c.n_head) cfg.fail("n_embd", "must be a multiple of n_head");
    return c;
  }
};

struct Gpt2Layer {
  Tensor ln_1_w, ln_1_b;      // [D]       h.N.ln_1.{weight,bias}
  Tensor attn_w, attn_b;      // [3D, D], [3D]  h.N.attn.c_attn (stored [D, 3D])
  Tensor attn_proj_w, attn_proj_b;  // [D, D], [D]  h.N.attn.c_proj
  Tensor ln_2_w, ln_2_b;      // [D]       h.N.ln_2
  Tensor fc_w, fc_b;          // [F, D], [F]  h.N.mlp.c_fc (stored [D, F])
  Tensor proj_w, proj_b;      // [D, F], [D]  h.N.mlp.c_proj (stored [F, D])
};

struct Gpt2Weights {
  Tensor wte;                 // [V, D]    wte.weight (also the output head)
  Tensor wpe;                 // [P, D]    wpe.weight
  std::vector<Gpt2Layer> layers;
  Tensor ln_f_w, ln_f_b;      // [D]       ln_f
  Tensor lm_head;             // [V, D]    lm_head.weight if stored, else wte
};

Gpt2Weights load_weights(const Gpt2Config& c, WeightLoader& w) {
  const int64_t D = c.n_embd, F = c.n_inner;
  Gpt2Weights g;
  g.wte = w.embedding("wte.weight", c.vocab_size, D);
  g.wpe = w.embedding("wpe.weight", c.n_positions, D);
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    Gpt2Layer L;
    L.ln_1_w = w.vector(p + "ln_1.weight", D);
    L.ln_1_b = w.vector(p + "ln_1.bias", D);
    L.attn_w = w.matrix_transposed(p + "attn.c_attn.weight", 3 * D, D);
    L.attn_b = w.vector(p + "attn.c_attn.bias", 3 * D);
    L.attn_proj_w = w.matrix_transposed(p + "attn.c_proj.weight", D, D);
    L.attn_proj_b = w.vector(p + "attn.c_proj.bias", D);
    L.ln_2_w = w.vector(p + "ln_2.weight", D);
    L.ln_2_b = w.vector(p + "ln_2.bias", D);
    L.fc_w = w.matrix_transposed(p + "mlp.c_fc.weight", F, D);
    L.fc_b = w.vector(p + "mlp.c_fc.bias", F);
    L.proj_w = w.matrix_transposed(p + "mlp.c_proj.weight", D, F);
    L.proj_b = w.vector(p + "mlp.c_proj.bias", D);
    g.layers.push_back(L);
  }
  g.ln_f_w = w.vector("ln_f.weight", D);
  g.ln_f_b = w.vector("ln_f.bias", D);
  g.lm_head = w.has("lm_head.weight") ? w.matrix("lm_head.weight", c.vocab_size, D) : g.wte;
  return g;
}

class Gpt2 final : public Model {
 public:
  Gpt2(const Gpt2Config& c, WeightLoader& loader, ModelInfo info)
      : c_(c), info_(std::move(info)), be_(loader.backend()), w_(load_weights(c, loader)), act_(be_) {
    memory_ = loader.take_memory();
    // Per decoded token: every matrix and vector once, the head, and one row of wte and wpe.
    const uint64_t head = w_.lm_head.data == w_.wte.data ? w_.wte.nbytes() : 0;
    info_.weight_bytes = loader.bytes_loaded() + w_.wte.nbytes() + w_.wpe.nbytes();
    info_.kv_dtype = loader.kv_dtype();
    info_.weight_bytes_per_token = loader.bytes_loaded() + head + (w_.wte.nbytes() / c.vocab_size) +
                                   (w_.wpe.nbytes() / c.n_positions);
  }

  const ModelInfo& info() const override { return info_; }

  Cache make_cache(int64_t max_seq) const override {
    // k, v per layer: [S, D], all heads of a position together
    return attention_cache(be_, std::min(max_seq, c_.n_positions), c_.n_layer, c_.n_embd, info_.kv_dtype);
  }

  Tensor forward(std::span<const int32_t> tokens, Cache& cache, Logits which) override {
    const int64_t T = static_cast<int64_t>(tokens.size()), D = c_.n_embd, pos0 = cache.n_past();
    check_room(cache, T, c_.n_positions);
    Tensor x = act_.get(X, T, D);             // [T, D]  residual stream
    Tensor h = act_.get(H, T, D);             // [T, D]  normed input / branch output
    Tensor qkv = act_.get(QKV, T, 3 * D);     // [T, 3D] fused projection
    Tensor att = act_.get(ATT, T, D);         // [T, D]  attention output (heads concatenated)
    Tensor ff = act_.get(FF, T, c_.n_inner);  // [T, F]  MLP hidden

    positions_.resize(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) positions_[static_cast<size_t>(t)] = static_cast<int32_t>(pos0 + t);
    be_.embed(x, w_.wte, tokens);                        // token embeddings
    be_.embed(h, w_.wpe, positions_);                    // position embeddings
    be_.add(x, x, h);
    trace(x, "embed");

    AttentionArgs args;
    args.n_heads = args.n_kv_heads = c_.n_head;
    args.head_dim = static_cast<int>(D / c_.n_head);
    args.pos0 = pos0;
    for (int l = 0; l < c_.n_layer; ++l) {
      const Gpt2Layer& L = w_.layers[static_cast<size_t>(l)];
      const LayerCache& kv = cache.layers[static_cast<size_t>(l)];
      // attention block
      be_.layernorm(h, x, L.ln_1_w, L.ln_1_b, c_.layer_norm_epsilon);
      trace(h, "attn_norm", l);
      be_.matmul(qkv, h, L.attn_w, L.attn_b);           // [T, 3D] = q | k | v
      trace(qkv, "qkv", l);
      append_kv(be_, kv, pos0, qkv.cols_view(D, D), qkv.cols_view(2 * D, D));  // k, v to the cache
      args.scale = attention_scale(l);
      args.probs = wants_attention_probs() ? act_.get(PROBS, int64_t{c_.n_head} * T, pos0 + T).reshape({c_.n_head, T, pos0 + T}) : Tensor{};
      be_.attention(att, qkv.cols_view(0, D), kv.k, kv.v, args);
      trace(att, "attn_out", l);
      if (!args.probs.empty()) trace(args.probs, "attn_probs", l);
      be_.matmul(h, att, L.attn_proj_w, L.attn_proj_b);  // [T, D]
      be_.add(x, x, h);
      trace(x, "attn_residual", l);
      // MLP block
      be_.layernorm(h, x, L.ln_2_w, L.ln_2_b, c_.layer_norm_epsilon);
      trace(h, "ffn_norm", l);
      be_.matmul(ff, h, L.fc_w, L.fc_b);                 // [T, F]
      apply_activation(be_, c_.activation, ff, ff);
      trace(ff, "ffn_act", l);
      be_.matmul(h, ff, L.proj_w, L.proj_b);             // [T, D]
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
    check_residual(residual, c_.n_embd, info_.architecture);
    return logits_to_host(be_, head(residual), host_logits_);
  }

 private:
  enum Slot { X, H, QKV, ATT, FF, LOGITS, PROBS };  // activation buffers

  // The final norm and the output head, as the end of forward() and the logit lens use them:
  // residual stream x [R, D] -> logits [R, V] on the backend.
  Tensor head(const Tensor& x) {
    const Tensor h = act_.get(H, x.rows(), c_.n_embd);       // [R, D]
    be_.layernorm(h, x, w_.ln_f_w, w_.ln_f_b, c_.layer_norm_epsilon);
    trace(h, "final_norm");
    const Tensor logits = act_.get(LOGITS, x.rows(), c_.vocab_size);  // [R, V]
    be_.matmul(logits, h, w_.lm_head, Tensor{});
    return logits;
  }

  float attention_scale(int layer) const {
    float s = c_.scale_attn_weights ? 1.0f / std::sqrt(static_cast<float>(c_.n_embd / c_.n_head)) : 1.0f;
    if (c_.scale_attn_by_inverse_layer_idx) s /= static_cast<float>(layer + 1);
    return s;
  }

  Gpt2Config c_;
  ModelInfo info_;
  Backend& be_;
  Gpt2Weights w_;
  Activations act_;
  std::vector<std::shared_ptr<void>> memory_;
  std::vector<int32_t> positions_;
  AlignedBuffer host_logits_;
};

std::unique_ptr<Model> load_gpt2(const nlohmann::json& config, const WeightFiles& files,
                                 const LoadOptions& options) {
  const Gpt2Config c = Gpt2Config::from_json(config);
  WeightLoader loader(files, options, {"transformer.", ""});
  ModelInfo info;
  info.architecture = "gpt2";
  info.model_type = "gpt2";
  info.vocab_size = c.vocab_size;
  info.max_context = c.n_positions;
  info.n_layers = c.n_layer;
  info.hidden_size = c.n_embd;
  read_special_ids(ConfigReader(config), info);
  return std::make_unique<Gpt2>(c, loader, std::move(info));
}

const ModelRegistration registration("gpt2", {"gpt2"}, {"GPT2LMHeadModel"}, load_gpt2);

}  // namespace

}  // namespace purellm
