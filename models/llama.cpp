// Llama (Meta, 2023) and its close relatives Mistral and Qwen2, chosen by config.
//
// Registers: model_type "llama", "mistral", "qwen2"; architectures LlamaForCausalLM,
// MistralForCausalLM, Qwen2ForCausalLM (Llama 2/3, TinyLlama, SmolLM, Mistral, Qwen2/2.5).
// Follows transformers' modeling_llama.py / modeling_mistral.py / modeling_qwen2.py (eager).
// Tested on: fixtures llama-tiny, llama3rope-tiny, mistral-tiny, qwen2-tiny and the real
// trained models/stories260K (llama2.c's TinyStories model).
//
// How it differs from GPT-2:
//   - RMSNorm (no mean, no bias) instead of LayerNorm;
//   - no learned positions: rotary embeddings (rotate_half layout) on q and k, with optional
//     linear or llama3 frequency scaling;
//   - grouped-query attention: n_kv_heads <= n_heads, query head h reads KV head
//     h / (n_heads / n_kv_heads), so the KV cache shrinks by n_heads / n_kv_heads;
//   - separate q/k/v/o projections stored [out, in] (no transpose), usually without bias;
//   - SwiGLU MLP: down(silu(gate(x)) * up(x));
//   - an untied output head (lm_head) unless tie_word_embeddings.
// Mistral adds a sliding window (query i sees keys i-window < j <= i, in prefill and decode);
// Qwen2 adds biases on q, k and v (not o).
#include <cmath>
#include <vector>

#include "models/layers.hpp"

namespace purellm {
namespace {

struct LlamaConfig {
  std::string model_type;   // model_type: llama | mistral | qwen2
  int64_t vocab_size;       // vocab_size
  int hidden_size;          // hidden_size: D
  int intermediate_size;    // intermediate_size: F, the SwiGLU width
  int n_layers;             // num_hidden_layers
  int n_heads;              // num_attention_heads
  int n_kv_heads;           // num_key_value_heads (GQA; = n_heads for MHA)
  int head_dim;             // head_dim (default hidden_size / num_attention_heads)
  int64_t max_positions;    // max_position_embeddings
  float rms_norm_eps;       // rms_norm_eps
  RopeConfig rope;          // rope_theta + rope_scaling (v4) or rope_parameters (v5)
  bool tie_word_embeddings; // tie_word_embeddings
  bool qkv_bias;            // attention_bias (llama) or always (qwen2)
  bool o_bias;              // attention_bias (llama only)
  bool mlp_bias;            // mlp_bias
  std::vector<int64_t> window;  // per layer: sliding window (0 = full attention)

  static LlamaConfig from_json(const nlohmann::json& j) {
    ConfigReader cfg(j);
    LlamaConfig c;
    c.model_type = cfg.string("model_type", "llama");
    c.vocab_size = cfg.integer({"vocab_size"});
    c.hidden_size = static_cast<int>(cfg.integer({"hidden_size"}));
    c.intermediate_size = static_cast<int>(cfg.integer({"intermediate_size"}));
    c.n_layers = static_cast<int>(cfg.integer({"num_hidden_layers"}, {}, 1, kMaxLayers));
    c.n_heads = static_cast<int>(cfg.integer({"num_attention_heads"}));
    c.n_kv_heads = static_cast<int>(cfg.integer({"num_key_value_heads"}, c.n_heads));
    if (c.n_heads % c.n_kv_heads) cfg.fail("num_key_value_heads", "must divide num_attention_heads");
    if (!cfg.has("head_dim") && c.hidden_size % c.n_heads)
      cfg.fail("hidden_size", "must be a multiple of num_attention_heads (or give head_dim)");
    c.head_dim = static_cast<int>(cfg.integer({"head_dim"}, c.hidden_size / c.n_heads));
    if (c.head_dim % 2) cfg.fail("head_dim", "must be even for rotary embeddings");
    c.max_positions = cfg.integer({"max_position_embeddings"}, 2048);
    c.rms_norm_eps = static_cast<float>(cfg.number({"rms_norm_eps"}, 1e-6, 0.0, 1.0));
    c.rope = read_rope_config(cfg);
    c.tie_word_embeddings = cfg.boolean("tie_word_embeddings", false);
    const bool attention_bias = cfg.boolean("attention_bias", false);
    c.qkv_bias = c.model_type == "qwen2" || attention_bias;
    c.o_bias = c.model_type != "qwen2" && attention_bias;
    c.mlp_bias = cfg.boolean("mlp_bias", false);
    if (cfg.string("hidden_act", "silu") != "silu") cfg.fail("hidden_act", "must be \"silu\" for this family");
    c.window = sliding_windows(cfg, c);
    return c;
  }

  // Mistral: one window for every layer. Qwen2: only when use_sliding_window, on the layers
  // layer_types marks "sliding_attention" (or those from max_window_layers on).
  static std::vector<int64_t> sliding_windows(const ConfigReader& cfg, const LlamaConfig& c) {
    std::vector<int64_t> w(static_cast<size_t>(c.n_layers), 0);
    const int64_t size = cfg.has("sliding_window") ? cfg.integer({"sliding_window"}, {}, 1, INT64_MAX) : 0;
    if (size == 0) return w;
    if (c.model_type == "mistral") return std::vector<int64_t>(w.size(), size);
    if (c.model_type != "qwen2" || !cfg.boolean("use_sliding_window", false)) return w;
    const int64_t first = cfg.integer({"max_window_layers"}, c.n_layers, 0);
    for (int l = 0; l < c.n_layers; ++l) {
      bool sliding = l >= first;
      if (cfg.has("layer_types")) {
        const auto& types = cfg.json().at("layer_types");
        if (!types.is_array() || types.size() != static_cast<size_t>(c.n_layers))
          cfg.fail("layer_types", "must list one type per layer");
        sliding = types[static_cast<size_t>(l)] == "sliding_attention";
      }
      if (sliding) w[static_cast<size_t>(l)] = size;
    }
    return w;
  }
};

struct LlamaLayer {
  Tensor attn_norm;             // [D]            input_layernorm.weight
  MatrixStack qkv;              // [Hq*d | Hkv*d | Hkv*d, D]  self_attn.{q,k,v}_proj (+ biases)
  Tensor wo, bo;                // [D, Hq*d]      self_attn.o_proj (bias empty unless the config has one)
  Tensor ffn_norm;              // [D]            post_attention_layernorm.weight
  MatrixStack gate_up;          // [F | F, D]     mlp.{gate,up}_proj (+ biases with mlp_bias)
  Tensor w_down, b_down;        // [D, F]         mlp.down_proj
};

struct LlamaWeights {
  Tensor embed;                 // [V, D]  embed_tokens.weight
  std::vector<LlamaLayer> layers;
  Tensor norm;                  // [D]     norm.weight
  Tensor lm_head;               // [V, D]  lm_head.weight, or embed when tied
};

LlamaWeights load_weights(const LlamaConfig& c, WeightLoader& w) {
  const int64_t D = c.hidden_size, F = c.intermediate_size;
  const int64_t q_dim = int64_t{c.n_heads} * c.head_dim, kv_dim = int64_t{c.n_kv_heads} * c.head_dim;
  auto bias = [&](bool on, const std::string& name, int64_t n) { return on ? w.vector(name, n) : Tensor{}; };
  LlamaWeights g;
  g.embed = w.embedding("embed_tokens.weight", c.vocab_size, D);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    LlamaLayer L;
    L.attn_norm = w.vector(p + "input_layernorm.weight", D);
    const std::string a = p + "self_attn.";
    L.qkv = w.stack({a + "q_proj", a + "k_proj", a + "v_proj"}, {q_dim, kv_dim, kv_dim}, D, c.qkv_bias);
    L.wo = w.matrix(p + "self_attn.o_proj.weight", D, q_dim);
    L.bo = bias(c.o_bias, p + "self_attn.o_proj.bias", D);
    L.ffn_norm = w.vector(p + "post_attention_layernorm.weight", D);
    L.gate_up = w.stack({p + "mlp.gate_proj", p + "mlp.up_proj"}, {F, F}, D, c.mlp_bias);
    L.w_down = w.matrix(p + "mlp.down_proj.weight", D, F);
    L.b_down = bias(c.mlp_bias, p + "mlp.down_proj.bias", D);
    g.layers.push_back(L);
  }
  g.norm = w.vector("norm.weight", D);
  // Some tied checkpoints still store lm_head.weight; the config decides.
  g.lm_head = c.tie_word_embeddings ? g.embed : w.matrix("lm_head.weight", c.vocab_size, D);
  return g;
}

class Llama final : public Model {
 public:
  Llama(const LlamaConfig& c, WeightLoader& loader, ModelInfo info)
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
    // k, v per layer: [S, Hkv*d]
    return attention_cache(be_, std::min(max_seq, c_.max_positions), c_.n_layers, int64_t{c_.n_kv_heads} * c_.head_dim, info_.kv_dtype);
  }

  Tensor forward(std::span<const int32_t> tokens, Cache& cache, Logits which) override {
    const int64_t T = static_cast<int64_t>(tokens.size()), D = c_.hidden_size, pos0 = cache.n_past();
    const int64_t q_dim = int64_t{c_.n_heads} * c_.head_dim, kv_dim = int64_t{c_.n_kv_heads} * c_.head_dim;
    check_room(cache, T, c_.max_positions);
    const RopeTables& rope = rope_.upto(pos0 + T);
    Tensor x = act_.get(X, T, D);                     // [T, D]  residual stream
    Tensor h = act_.get(H, T, D);                     // [T, D]  normed input / branch output
    Tensor qkv = act_.get(QKV, T, q_dim + 2 * kv_dim);  // [T, Hq*d | Hkv*d | Hkv*d]  q | k | v
    const Tensor q = qkv.cols_view(0, q_dim), k = qkv.cols_view(q_dim, kv_dim), v = qkv.cols_view(q_dim + kv_dim, kv_dim);
    Tensor att = act_.get(ATT, T, q_dim);             // [T, Hq*d]
    const int64_t F = c_.intermediate_size;
    Tensor gate_up = act_.get(GATE_UP, T, 2 * F);     // [T, F | F]  gate | up
    const Tensor gate = gate_up.cols_view(0, F), up = gate_up.cols_view(F, F);

    be_.embed(x, w_.embed, tokens);
    trace(x, "embed");

    AttentionArgs args;
    args.n_heads = c_.n_heads;
    args.n_kv_heads = c_.n_kv_heads;
    args.head_dim = c_.head_dim;
    args.pos0 = pos0;
    args.scale = 1.0f / std::sqrt(static_cast<float>(c_.head_dim));
    for (int l = 0; l < c_.n_layers; ++l) {
      const LlamaLayer& L = w_.layers[static_cast<size_t>(l)];
      const LayerCache& kv = cache.layers[static_cast<size_t>(l)];
      // attention block
      be_.rmsnorm(h, x, L.attn_norm, c_.rms_norm_eps);
      trace(h, "attn_norm", l);
      matmul(be_, qkv, h, L.qkv);                    // [T, Hq*d | Hkv*d | Hkv*d]
      be_.rope(q, c_.n_heads, c_.head_dim, c_.head_dim, pos0, rope.cos, rope.sin);
      be_.rope(k, c_.n_kv_heads, c_.head_dim, c_.head_dim, pos0, rope.cos, rope.sin);
      trace(q, "q_rope", l);
      trace(k, "k_rope", l);
      append_kv(be_, kv, pos0, k, v);
      args.window = c_.window[static_cast<size_t>(l)];
      args.probs = wants_attention_probs() ? act_.get(PROBS, int64_t{c_.n_heads} * T, pos0 + T).reshape({c_.n_heads, T, pos0 + T}) : Tensor{};
      be_.attention(att, q, kv.k, kv.v, args);       // [T, Hq*d]
      trace(att, "attn_out", l);
      if (!args.probs.empty()) trace(args.probs, "attn_probs", l);
      be_.matmul(h, att, L.wo, L.bo);                // [T, D]
      be_.add(x, x, h);
      trace(x, "attn_residual", l);
      // SwiGLU MLP block
      be_.rmsnorm(h, x, L.ffn_norm, c_.rms_norm_eps);
      trace(h, "ffn_norm", l);
      matmul(be_, gate_up, h, L.gate_up);            // [T, F | F]
      be_.silu_mul(gate, gate, up);                  // silu(gate) * up
      trace(gate, "ffn_act", l);
      be_.matmul(h, gate, L.w_down, L.b_down);       // [T, D]
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
  enum Slot { X, H, QKV, ATT, GATE_UP, LOGITS, PROBS };  // activation buffers

  // The final norm and the output head, as the end of forward() and the logit lens use them:
  // residual stream x [R, D] -> logits [R, V] on the backend.
  Tensor head(const Tensor& x) {
    const Tensor h = act_.get(H, x.rows(), c_.hidden_size);       // [R, D]
    be_.rmsnorm(h, x, w_.norm, c_.rms_norm_eps);
    trace(h, "final_norm");
    const Tensor logits = act_.get(LOGITS, x.rows(), c_.vocab_size);  // [R, V]
    be_.matmul(logits, h, w_.lm_head, Tensor{});
    return logits;
  }


  LlamaConfig c_;
  ModelInfo info_;
  Backend& be_;
  LlamaWeights w_;
  Activations act_;
  RopeCache rope_;
  std::vector<std::shared_ptr<void>> memory_;
  AlignedBuffer host_logits_;
};

std::unique_ptr<Model> load_llama(const nlohmann::json& config, const WeightFiles& files,
                                  const LoadOptions& options) {
  const LlamaConfig c = LlamaConfig::from_json(config);
  WeightLoader loader(files, options, {"model.", ""});
  ModelInfo info;
  info.architecture = c.model_type;
  info.model_type = c.model_type;
  info.vocab_size = c.vocab_size;
  info.max_context = c.max_positions;
  info.n_layers = c.n_layers;
  info.hidden_size = c.hidden_size;
  read_special_ids(ConfigReader(config), info);
  return std::make_unique<Llama>(c, loader, std::move(info));
}

const ModelRegistration registration("llama", {"llama", "mistral", "qwen2"},
                                     {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"}, load_llama);

}  // namespace
}  // namespace purellm
