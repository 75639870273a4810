// BLOOM (BigScience, 2022): a GPT-2-shaped model with ALiBi instead of position embeddings.
//
// Registers: model_type "bloom", architectures BloomForCausalLM (bloom-560m ... bloom-176b,
// bloomz). Follows transformers' modeling_bloom.py.
// Tested on: fixtures/bloom-tiny, 6 heads so the non-power-of-2 slope path runs (logits,
// every hidden state, cached decode, greedy ids).
//
// The shape of one layer (pre-norm, sequential, like GPT-2):
//   h = x + attn(input_layernorm(x));  x = h + mlp(post_attention_layernorm(h))
// How it differs from GPT-2:
//   - no position embeddings at all: ALiBi adds slope_h * key_position to head h's scaled
//     scores (the query's own position would cancel in the softmax);
//   - a LayerNorm right after the token embedding (word_embeddings_layernorm);
//   - query_key_value is interleaved per head, stored rows [q_h | k_h | v_h] for each head h;
//     reordered once at load (FusedQkv) so the matmul output is [all q | all k | all v];
//   - weights stored [out, in]; MLP 4 * hidden_size wide with the tanh GELU;
//   - the head is tied to word_embeddings.
// Refused at load: `apply_residual_connection_post_layernorm` true (the residual taken after
// the norm): no released BLOOM uses it and no golden covers it.
#include <cmath>
#include <vector>

#include "models/layers.hpp"

namespace purellm {
namespace {

struct BloomConfig {
  int64_t vocab_size;        // vocab_size
  int hidden_size;           // hidden_size (old: n_embed): D; the MLP is 4D wide
  int n_layers;              // n_layer (alias num_hidden_layers)
  int n_heads;               // n_head (alias num_attention_heads)
  float layer_norm_epsilon;  // layer_norm_epsilon
  int64_t max_context;       // seq_length if given, else 2048: the training length (ALiBi itself sets no limit)

  static BloomConfig from_json(const nlohmann::json& j) {
    ConfigReader cfg(j);
    BloomConfig c;
    c.vocab_size = cfg.integer({"vocab_size"});
    c.hidden_size = static_cast<int>(cfg.integer({"hidden_size", "n_embed"}));
    c.n_layers = static_cast<int>(cfg.integer({"n_layer", "num_hidden_layers"}));
    c.n_heads = static_cast<int>(cfg.integer({"n_head", "num_attention_heads"}));
    if (c.hidden_size % c.n_heads) cfg.fail("hidden_size", "must be a multiple of n_head");
    c.layer_norm_epsilon = static_cast<float>(cfg.number({"layer_norm_epsilon"}, 1e-5, 0.0, 1.0));
    c.max_context = cfg.integer({"seq_length"}, 2048);
    if (cfg.boolean("apply_residual_connection_post_layernorm", false))
      cfg.fail("apply_residual_connection_post_layernorm", "true is not supported");
    return c;
  }
};

struct BloomLayer {
  Tensor attn_norm_w, attn_norm_b;  // [D]             input_layernorm
  Tensor qkv_w, qkv_b;              // [3D, D], [3D]   self_attention.query_key_value (reordered to q | k | v)
  Tensor dense_w, dense_b;          // [D, D], [D]     self_attention.dense
  Tensor ffn_norm_w, ffn_norm_b;    // [D]             post_attention_layernorm
  Tensor fc_w, fc_b;                // [4D, D], [4D]   mlp.dense_h_to_4h
  Tensor proj_w, proj_b;            // [D, 4D], [D]    mlp.dense_4h_to_h
};

struct BloomWeights {
  Tensor embed;                     // [V, D]  word_embeddings.weight (also the output head)
  Tensor embed_norm_w, embed_norm_b;  // [D]   word_embeddings_layernorm
  std::vector<BloomLayer> layers;
  Tensor ln_f_w, ln_f_b;            // [D]     ln_f
};

BloomWeights load_weights(const BloomConfig& c, WeightLoader& w) {
  const int64_t D = c.hidden_size, F = 4 * D;
  const FusedQkv qkv{c.n_heads, 1, c.hidden_size / c.n_heads};  // one group per head: [q_h | k_h | v_h]
  BloomWeights g;
  g.embed = w.embedding("word_embeddings.weight", c.vocab_size, D);
  g.embed_norm_w = w.vector("word_embeddings_layernorm.weight", D);
  g.embed_norm_b = w.vector("word_embeddings_layernorm.bias", D);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    BloomLayer L;
    L.attn_norm_w = w.vector(p + "input_layernorm.weight", D);
    L.attn_norm_b = w.vector(p + "input_layernorm.bias", D);
    L.qkv_w = w.fused_qkv(p + "self_attention.query_key_value.weight", qkv, D);
    L.qkv_b = w.fused_qkv_bias(p + "self_attention.query_key_value.bias", qkv);
    L.dense_w = w.matrix(p + "self_attention.dense.weight", D, D);
    L.dense_b = w.vector(p + "self_attention.dense.bias", D);
    L.ffn_norm_w = w.vector(p + "post_attention_layernorm.weight", D);
    L.ffn_norm_b = w.vector(p + "post_attention_layernorm.bias", D);
    L.fc_w = w.matrix(p + "mlp.dense_h_to_4h.weight", F, D);
    L.fc_b = w.vector(p + "mlp.dense_h_to_4h.bias", F);
    L.proj_w = w.matrix(p + "mlp.dense_4h_to_h.weight", D, F);
    L.proj_b = w.vector(p + "mlp.dense_4h_to_h.bias", D);
    g.layers.push_back(L);
  }
  g.ln_f_w = w.vector("ln_f.weight", D);
  g.ln_f_b = w.vector("ln_f.bias", D);
  return g;
}

class Bloom final : public Model {
 public:
  Bloom(const BloomConfig& c, WeightLoader& loader, ModelInfo info)
      : c_(c), info_(std::move(info)), be_(loader.backend()), w_(load_weights(c, loader)), act_(be_) {
    memory_ = loader.take_memory();
    slopes_ = alibi_slopes_tensor(be_, c.n_heads, 1.0f, slopes_memory_);  // BLOOM adds them unscaled
    const uint64_t embed_row = w_.embed.nbytes() / static_cast<uint64_t>(c.vocab_size);
    info_.weight_bytes = loader.bytes_loaded() + w_.embed.nbytes();
    info_.kv_dtype = loader.kv_dtype();
    info_.weight_bytes_per_token = loader.bytes_loaded() + w_.embed.nbytes() + embed_row;
  }

  const ModelInfo& info() const override { return info_; }

  Cache make_cache(int64_t max_seq) const override {
    return attention_cache(be_, std::min(max_seq, c_.max_context), c_.n_layers, c_.hidden_size, info_.kv_dtype);
  }

  Tensor forward(std::span<const int32_t> tokens, Cache& cache, Logits which) override {
    const int64_t T = static_cast<int64_t>(tokens.size()), D = c_.hidden_size, pos0 = cache.n_past();
    check_room(cache, T, c_.max_context);
    Tensor x = act_.get(X, T, D);            // [T, D]   residual stream
    Tensor h = act_.get(H, T, D);            // [T, D]   normed input / branch output
    Tensor qkv = act_.get(QKV, T, 3 * D);    // [T, 3D]  = q | k | v
    Tensor att = act_.get(ATT, T, D);        // [T, D]
    Tensor ff = act_.get(FF, T, 4 * D);      // [T, 4D]

    be_.embed(x, w_.embed, tokens);
    be_.layernorm(x, x, w_.embed_norm_w, w_.embed_norm_b, c_.layer_norm_epsilon);
    trace(x, "embed");

    AttentionArgs args;
    args.n_heads = args.n_kv_heads = c_.n_heads;
    args.head_dim = static_cast<int>(D / c_.n_heads);
    args.pos0 = pos0;
    args.scale = 1.0f / std::sqrt(static_cast<float>(args.head_dim));
    args.alibi_slopes = slopes_;             // score += slope_h * key_position
    for (int l = 0; l < c_.n_layers; ++l) {
      const BloomLayer& L = w_.layers[static_cast<size_t>(l)];
      const LayerCache& kv = cache.layers[static_cast<size_t>(l)];
      // attention block
      be_.layernorm(h, x, L.attn_norm_w, L.attn_norm_b, c_.layer_norm_epsilon);
      trace(h, "attn_norm", l);
      be_.matmul(qkv, h, L.qkv_w, L.qkv_b);                        // [T, 3D]
      trace(qkv, "qkv", l);
      append_kv(be_, kv, pos0, qkv.cols_view(D, D), qkv.cols_view(2 * D, D));  // k, v to the cache
      args.probs = wants_attention_probs() ? act_.get(PROBS, int64_t{c_.n_heads} * T, pos0 + T).reshape({c_.n_heads, T, pos0 + T}) : Tensor{};
      be_.attention(att, qkv.cols_view(0, D), kv.k, kv.v, args);   // [T, D]
      trace(att, "attn_out", l);
      if (!args.probs.empty()) trace(args.probs, "attn_probs", l);
      be_.matmul(h, att, L.dense_w, L.dense_b);                    // [T, D]
      be_.add(x, x, h);
      trace(x, "attn_residual", l);
      // MLP block
      be_.layernorm(h, x, L.ffn_norm_w, L.ffn_norm_b, c_.layer_norm_epsilon);
      trace(h, "ffn_norm", l);
      be_.matmul(ff, h, L.fc_w, L.fc_b);                           // [T, 4D]
      be_.gelu_tanh(ff, ff);
      trace(ff, "ffn_act", l);
      be_.matmul(h, ff, L.proj_w, L.proj_b);                       // [T, D]
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
    be_.layernorm(h, x, w_.ln_f_w, w_.ln_f_b, c_.layer_norm_epsilon);
    trace(h, "final_norm");
    const Tensor logits = act_.get(LOGITS, x.rows(), c_.vocab_size);  // [R, V]
    be_.matmul(logits, h, w_.embed, Tensor{});  // tied head
    return logits;
  }

  BloomConfig c_;
  ModelInfo info_;
  Backend& be_;
  BloomWeights w_;
  Activations act_;
  Tensor slopes_;                          // [n_heads] F32 ALiBi slopes
  std::shared_ptr<void> slopes_memory_;
  std::vector<std::shared_ptr<void>> memory_;
  AlignedBuffer host_logits_;
};

std::unique_ptr<Model> load_bloom(const nlohmann::json& config, const WeightFiles& files,
                                  const LoadOptions& options) {
  const BloomConfig c = BloomConfig::from_json(config);
  // save_pretrained writes "transformer."; the bigscience uploads have no prefix.
  WeightLoader loader(files, options, {"transformer.", ""});
  ModelInfo info;
  info.architecture = "bloom";
  info.model_type = "bloom";
  info.vocab_size = c.vocab_size;
  info.max_context = c.max_context;
  info.n_layers = c.n_layers;
  info.hidden_size = c.hidden_size;
  read_special_ids(ConfigReader(config), info);
  return std::make_unique<Bloom>(c, loader, std::move(info));
}

const ModelRegistration registration("bloom", {"bloom"}, {"BloomForCausalLM"}, load_bloom);

}  // namespace
}  // namespace purellm
