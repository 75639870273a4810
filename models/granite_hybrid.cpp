// IBM Granite: Granite 4.0 hybrids (Mamba2 + attention, optional MoE) and the Granite 3.x
// transformers they grew from (dense, MoE, MoE + shared MLP), chosen by config.
//
// Registers: model_type "granitemoehybrid", "granite", "granitemoe", "granitemoeshared";
// architectures GraniteMoeHybridForCausalLM, GraniteForCausalLM, GraniteMoeForCausalLM,
// GraniteMoeSharedForCausalLM (granite-4.0-h-350m / -1b / -micro / -tiny, granite-3.x).
// Follows transformers' modeling_granitemoehybrid.py (torch_forward of the Mamba2 mixer, eager
// attention), modeling_granite.py, modeling_granitemoe.py, modeling_granitemoeshared.py.
// Tested on: fixtures granite-hybrid-tiny, granite-hybrid-g2-tiny (2 groups),
// granite-hybrid-moe-rope-tiny (MoE + rope); Granite 3.x only on synthetic configs (no fixtures).
//
// How it differs from Llama:
//   - four scalar multipliers (muP): embeddings x embedding_multiplier; every branch output
//     x residual_multiplier before it is added; attention scores x attention_multiplier
//     (instead of 1/sqrt(head_dim)); logits / logits_scaling (a division);
//   - Granite 4.0 hybrids: layer_types picks each layer's mixer, a Mamba2 mixer or attention,
//     and the attention layers use no positional encoding at all unless
//     position_embedding_type is "rope" (Granite 3.x always uses rope);
//   - the FFN is a "shared MLP" whose gate and up projections are fused in one matrix
//     input_linear [2F, D] (gate rows first), and/or a mixture of experts: router logits,
//     top-k, softmax over only those k, experts stacked [E, 2I, D] / [E, D, I];
//   - the head is usually tied to the embedding.
// The Mamba2 mixer (Dao & Gu 2024, "Transformers are SSMs"), per token t:
//   [z | xBC | dt] = in_proj(x)           z: d_inner, xBC: d_inner + 2 G N, dt: n_heads
//   xBC = silu(causal depthwise conv1d(xBC) + bias), split into x [n_heads, P], B, C [G, N]
//   dt = softplus(dt + dt_bias), A = -exp(A_log); head h reads group h / (n_heads / G)
//   S_h = exp(dt_h A_h) S_h + dt_h x_h B_g^T        S_h: [P, N], the recurrent state
//   y_h = S_h C_g + D_h x_h
//   out = out_proj(rmsnorm(y * silu(z)))   the norm spans the whole d_inner, even with G > 1
// The state a Mamba2 layer carries between calls is the last d_conv conv inputs and S: its
// size does not grow with the context (Cache: LayerCache::conv, LayerCache::ssm).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "models/layers.hpp"

namespace purellm {
namespace {

enum class Mixer { Attention, Mamba };

struct GraniteConfig {
  std::string model_type;   // model_type: granite | granitemoe | granitemoeshared | granitemoehybrid
  int64_t vocab_size{};     // vocab_size
  int hidden_size{};        // hidden_size: D
  int n_layers{};           // num_hidden_layers
  std::vector<Mixer> mixer; // layer_types: "mamba" | "attention" per layer (hybrid; else all attention)
  // attention layers
  int n_heads{};            // num_attention_heads
  int n_kv_heads{};         // num_key_value_heads
  int head_dim{};           // hidden_size / num_attention_heads
  bool attention_bias{};    // attention_bias: q/k/v/o biases
  bool rope{};              // position_embedding_type == "rope" (hybrid default: none, "nope")
  RopeConfig rope_config;   // rope_theta + rope_scaling (v4) or rope_parameters (v5)
  int64_t max_positions{};  // max_position_embeddings
  // the four multipliers
  float embedding_multiplier{}; // embedding_multiplier: h0 = embed[id] * m
  float attention_multiplier{}; // attention_multiplier: the score scale
  float residual_multiplier{};  // residual_multiplier: h += branch * m
  float logits_scaling{};       // logits_scaling: logits = head(h) / s
  // FFN
  int mlp_size{};           // intermediate_size of granite's dense MLP (gate/up/down_proj), 0: none
  bool mlp_bias{};          // mlp_bias (granite dense)
  int shared_size{};        // shared_intermediate_size: F of shared_mlp, 0: none
  int n_experts{};          // num_local_experts: E (0: no MoE)
  int top_k{};              // num_experts_per_tok
  int expert_size{};        // intermediate_size: I, each expert's width
  // Mamba2 layers
  int mamba_heads{};        // mamba_n_heads
  int mamba_head_dim{};     // mamba_d_head: P ("auto": d_inner / n_heads)
  int d_state{};            // mamba_d_state: N
  int d_conv{};             // mamba_d_conv: K
  int n_groups{};           // mamba_n_groups: G
  int d_inner{};            // mamba_expand * hidden_size
  int chunk_size{};         // mamba_chunk_size (the SSD chunk length of the prefill scan)
  bool conv_bias{};         // mamba_conv_bias
  bool proj_bias{};         // mamba_proj_bias: in_proj / out_proj biases
  float dt_min{}, dt_max{}; // time_step_limit: clamp of softplus(dt) ((0, inf): none)
  float rms_norm_eps{};     // rms_norm_eps (every norm, the gated Mamba norm too)
  bool tie_word_embeddings{}; // tie_word_embeddings

  int conv_dim() const { return d_inner + 2 * n_groups * d_state; }          // xBC width
  int in_proj_dim() const { return d_inner + conv_dim() + mamba_heads; }     // [z | xBC | dt]
  bool has_mamba() const { return std::find(mixer.begin(), mixer.end(), Mixer::Mamba) != mixer.end(); }

  static GraniteConfig from_json(const nlohmann::json& j) {
    ConfigReader cfg(j);
    GraniteConfig c;
    c.model_type = cfg.string("model_type", "granite");
    const bool hybrid = c.model_type == "granitemoehybrid";
    c.vocab_size = cfg.integer({"vocab_size"});
    c.hidden_size = static_cast<int>(cfg.integer({"hidden_size"}));
    c.n_layers = static_cast<int>(cfg.integer({"num_hidden_layers"}, {}, 1, kMaxLayers));
    c.mixer.assign(static_cast<size_t>(c.n_layers), Mixer::Attention);
    if (hybrid) {
      if (!cfg.has("layer_types")) cfg.fail("layer_types", "is missing (one of \"mamba\", \"attention\" per layer)");
      const auto& types = j.at("layer_types");
      if (!types.is_array() || types.size() != static_cast<size_t>(c.n_layers))
        cfg.fail("layer_types", "must list one type per layer (" + std::to_string(c.n_layers) + ")");
      for (size_t l = 0; l < types.size(); ++l) {
        if (types[l] == "mamba") c.mixer[l] = Mixer::Mamba;
        else if (types[l] != "attention")
          cfg.fail("layer_types", "entry " + std::to_string(l) + " is " + types[l].dump() + ", expected \"mamba\" or \"attention\"");
      }
    }
    c.n_heads = static_cast<int>(cfg.integer({"num_attention_heads"}));
    c.n_kv_heads = static_cast<int>(cfg.integer({"num_key_value_heads"}, c.n_heads));
    if (c.n_heads % c.n_kv_heads) cfg.fail("num_key_value_heads", "must divide num_attention_heads");
    if (c.hidden_size % c.n_heads) cfg.fail("hidden_size", "must be a multiple of num_attention_heads");
    c.head_dim = c.hidden_size / c.n_heads;
    c.attention_bias = cfg.boolean("attention_bias", false);
    const std::string positions = cfg.string("position_embedding_type", hybrid ? "nope" : "rope");
    if (positions != "rope" && positions != "nope")
      cfg.fail("position_embedding_type", "\"" + positions + "\" is not supported (\"rope\" or \"nope\")");
    c.rope = positions == "rope";
    if (c.rope && c.head_dim % 2) cfg.fail("num_attention_heads", "gives an odd head_dim, which rope cannot rotate");
    c.rope_config = read_rope_config(cfg);
    c.max_positions = cfg.integer({"max_position_embeddings"}, 4096);

    auto multiplier = [&](const char* key, double min) {
      return static_cast<float>(cfg.number({key}, 1.0, min, 1e6));
    };
    c.embedding_multiplier = multiplier("embedding_multiplier", -1e6);
    c.attention_multiplier = multiplier("attention_multiplier", -1e6);
    c.residual_multiplier = multiplier("residual_multiplier", -1e6);
    c.logits_scaling = multiplier("logits_scaling", 1e-30);  // divides: must not be 0

    // FFN: granite has a dense MLP of intermediate_size; the MoE families use intermediate_size
    // as each expert's width and shared_intermediate_size for the shared MLP.
    c.n_experts = c.model_type == "granite" ? 0 : static_cast<int>(cfg.integer({"num_local_experts"}, 0, 0));
    if (c.model_type == "granitemoe" && c.n_experts == 0) cfg.fail("num_local_experts", "must be > 0 for granitemoe");
    c.top_k = c.n_experts ? static_cast<int>(cfg.integer({"num_experts_per_tok"}, {}, 1, c.n_experts)) : 0;
    c.expert_size = c.n_experts ? static_cast<int>(cfg.integer({"intermediate_size"})) : 0;
    c.mlp_size = c.model_type == "granite" ? static_cast<int>(cfg.integer({"intermediate_size"})) : 0;
    c.mlp_bias = cfg.boolean("mlp_bias", false);
    c.shared_size = 0;
    if (hybrid) c.shared_size = static_cast<int>(cfg.integer({"shared_intermediate_size"}));
    if (c.model_type == "granitemoeshared") c.shared_size = static_cast<int>(cfg.integer({"shared_intermediate_size"}, 0, 0));
    if (!c.mlp_size && !c.shared_size && !c.n_experts)
      cfg.fail("shared_intermediate_size", "and num_local_experts are both 0: the layers would have no FFN");
    if (cfg.string("hidden_act", "silu") != "silu") cfg.fail("hidden_act", "must be \"silu\" for this family");

    c.rms_norm_eps = static_cast<float>(cfg.number({"rms_norm_eps"}, 1e-6, 0.0, 1.0));
    c.tie_word_embeddings = cfg.boolean("tie_word_embeddings", false);
    if (!c.has_mamba()) return c;

    // Mamba2 (transformers' GraniteMoeHybridConfig names and defaults)
    c.mamba_heads = static_cast<int>(cfg.integer({"mamba_n_heads"}, 128));
    c.d_state = static_cast<int>(cfg.integer({"mamba_d_state"}, 256));
    c.d_conv = static_cast<int>(cfg.integer({"mamba_d_conv"}, 4));
    c.n_groups = static_cast<int>(cfg.integer({"mamba_n_groups"}, 1));
    const int64_t expand = cfg.integer({"mamba_expand"}, 2);
    if (expand * c.hidden_size > INT32_MAX / 4) cfg.fail("mamba_expand", "makes d_inner too large");
    c.d_inner = static_cast<int>(expand * c.hidden_size);
    if (c.mamba_heads % c.n_groups) cfg.fail("mamba_n_groups", "must divide mamba_n_heads");
    if (cfg.has("mamba_d_head") && j.at("mamba_d_head") == "auto") {
      if (c.d_inner % c.mamba_heads) cfg.fail("mamba_n_heads", "must divide mamba_expand * hidden_size");
      c.mamba_head_dim = c.d_inner / c.mamba_heads;
    } else {
      c.mamba_head_dim = static_cast<int>(cfg.integer({"mamba_d_head"}));
      if (int64_t{c.mamba_head_dim} * c.mamba_heads != c.d_inner)
        cfg.fail("mamba_d_head", "x mamba_n_heads must equal mamba_expand * hidden_size (" + std::to_string(c.d_inner) +
                                     "), got " + std::to_string(c.mamba_head_dim) + " x " + std::to_string(c.mamba_heads));
    }
    c.chunk_size = static_cast<int>(cfg.integer({"mamba_chunk_size"}, 256));
    c.conv_bias = cfg.boolean("mamba_conv_bias", true);
    c.proj_bias = cfg.boolean("mamba_proj_bias", false);
    c.dt_min = 0.0f;
    c.dt_max = 3.4e38f;
    if (cfg.has("time_step_limit")) {
      const auto& lim = j.at("time_step_limit");
      if (!lim.is_array() || lim.size() != 2) cfg.fail("time_step_limit", "must be [min, max]");
      c.dt_min = static_cast<float>(limit_value(cfg, lim[0]));
      c.dt_max = static_cast<float>(std::min(limit_value(cfg, lim[1]), 3.4e38));
      if (!(c.dt_min >= 0.0f && c.dt_min <= c.dt_max)) cfg.fail("time_step_limit", "must be 0 <= min <= max, got " + lim.dump());
    }
    return c;
  }

  // A time_step_limit entry: a number, or transformers 5's {"__float__": "Infinity"} for inf.
  static double limit_value(const ConfigReader& cfg, const nlohmann::json& v) {
    if (v.is_number()) return v.get<double>();
    if (v.is_object() && v.contains("__float__") && v["__float__"].is_string()) {
      const std::string s = v["__float__"].get<std::string>();
      if (s == "Infinity" || s == "inf") return HUGE_VAL;
    }
    cfg.fail("time_step_limit", "entries must be numbers (or {\"__float__\": \"Infinity\"}), got " + v.dump());
  }
};

struct GraniteLayer {
  Mixer mixer;
  Tensor attn_norm;             // [D]                  input_layernorm.weight
  // attention mixer
  MatrixStack qkv;              // [Hq*d | Hkv*d | Hkv*d, D]  self_attn.{q,k,v}_proj (+ biases: attention_bias)
  Tensor wo, bo;                // [D, Hq*d]    self_attn.o_proj.weight (+ bias)
  // Mamba2 mixer (mamba.)
  Tensor in_proj, in_bias;      // [d_inner + conv_dim + n_heads, D], bias   in_proj.weight/.bias
  Tensor conv_w, conv_b;        // [conv_dim, 1, K], [conv_dim]              conv1d.weight/.bias
  Tensor dt_bias, A_log, D;     // [n_heads] each                            dt_bias, A_log, D
  Tensor ssm_norm;              // [d_inner]                                 norm.weight
  Tensor out_proj, out_bias;    // [D, d_inner], [D]                         out_proj.weight/.bias
  // FFN
  Tensor ffn_norm;              // [D]                  post_attention_layernorm.weight
  MatrixStack gate_up;          // [F | F, D]  shared_mlp.input_linear.weight (gate rows [0, F), up [F, 2F)),
                                //   or mlp.{gate,up}_proj (+ biases: mlp_bias) in granite dense
  Tensor w_down, b_down;        // [D, F]   shared_mlp.output_linear.weight | mlp.down_proj.weight (+ bias)
  Tensor router;                // [E, D]   block_sparse_moe.router.layer.weight
  Tensor experts_in;            // [E*2I, D] block_sparse_moe.input_linear.weight [E, 2I, D] (gate | up)
  Tensor experts_out;           // [E*D, I]  block_sparse_moe.output_linear.weight [E, D, I]
};

struct GraniteWeights {
  Tensor embed;                 // [V, D]  embed_tokens.weight
  std::vector<GraniteLayer> layers;
  Tensor norm;                  // [D]     norm.weight
  Tensor lm_head;               // [V, D]  lm_head.weight, or embed when tied
  uint64_t expert_bytes = 0;    // all experts of all layers (a token reads top_k / E of them)
};

GraniteWeights load_weights(const GraniteConfig& c, WeightLoader& w) {
  const int64_t D = c.hidden_size, q_dim = int64_t{c.n_heads} * c.head_dim, kv_dim = int64_t{c.n_kv_heads} * c.head_dim;
  auto bias = [&](bool on, const std::string& name, int64_t n) { return on ? w.vector(name, n) : Tensor{}; };
  GraniteWeights g;
  g.embed = w.embedding("embed_tokens.weight", c.vocab_size, D);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    GraniteLayer L;
    L.mixer = c.mixer[static_cast<size_t>(l)];
    L.attn_norm = w.vector(p + "input_layernorm.weight", D);
    if (L.mixer == Mixer::Attention) {
      const std::string a = p + "self_attn.";
      L.qkv = w.stack({a + "q_proj", a + "k_proj", a + "v_proj"}, {q_dim, kv_dim, kv_dim}, D, c.attention_bias);
      L.wo = w.matrix(p + "self_attn.o_proj.weight", D, q_dim);
      L.bo = bias(c.attention_bias, p + "self_attn.o_proj.bias", D);
    } else {
      const std::string m = p + "mamba.";
      L.in_proj = w.matrix(m + "in_proj.weight", c.in_proj_dim(), D);
      L.in_bias = bias(c.proj_bias, m + "in_proj.bias", c.in_proj_dim());
      L.conv_w = w.f32(m + "conv1d.weight", {c.conv_dim(), 1, c.d_conv});  // rows = channels, cols = taps
      L.conv_b = bias(c.conv_bias, m + "conv1d.bias", c.conv_dim());
      L.dt_bias = w.vector(m + "dt_bias", c.mamba_heads);
      L.A_log = w.vector(m + "A_log", c.mamba_heads);
      L.D = w.vector(m + "D", c.mamba_heads);
      L.ssm_norm = w.vector(m + "norm.weight", c.d_inner);
      L.out_proj = w.matrix(m + "out_proj.weight", D, c.d_inner);
      L.out_bias = bias(c.proj_bias, m + "out_proj.bias", D);
    }
    L.ffn_norm = w.vector(p + "post_attention_layernorm.weight", D);
    if (c.mlp_size) {
      L.gate_up = w.stack({p + "mlp.gate_proj", p + "mlp.up_proj"}, {c.mlp_size, c.mlp_size}, D, c.mlp_bias);
      L.w_down = w.matrix(p + "mlp.down_proj.weight", D, c.mlp_size);
      L.b_down = bias(c.mlp_bias, p + "mlp.down_proj.bias", D);
    }
    if (c.shared_size) {
      L.gate_up = {{w.matrix(p + "shared_mlp.input_linear.weight", 2 * int64_t{c.shared_size}, D)}, {Tensor{}}};
      L.w_down = w.matrix(p + "shared_mlp.output_linear.weight", D, c.shared_size);
    }
    if (c.n_experts) {
      const std::string e = p + "block_sparse_moe.";
      L.router = w.f32(e + "router.layer.weight", {c.n_experts, D});  // kept F32 under --dtype: it picks experts
      L.experts_in = w.matrices(e + "input_linear.weight", c.n_experts, 2 * int64_t{c.expert_size}, D);
      L.experts_out = w.matrices(e + "output_linear.weight", c.n_experts, D, c.expert_size);
      g.expert_bytes += L.experts_in.nbytes() + L.experts_out.nbytes();
    }
    g.layers.push_back(L);
  }
  g.norm = w.vector("norm.weight", D);
  g.lm_head = c.tie_word_embeddings ? g.embed : w.matrix("lm_head.weight", c.vocab_size, D);
  return g;
}

class Granite final : public Model {
 public:
  Granite(const GraniteConfig& c, WeightLoader& loader, ModelInfo info)
      : c_(c), info_(std::move(info)), be_(loader.backend()), w_(load_weights(c, loader)), act_(be_),
        rope_(be_, c.head_dim, c.max_positions, c.rope_config) {
    memory_ = loader.take_memory();
    const uint64_t embed_row = w_.embed.nbytes() / static_cast<uint64_t>(c.vocab_size);
    const uint64_t tied_head = c.tie_word_embeddings ? w_.embed.nbytes() : 0;
    // A decoded token runs top_k of the E experts of each layer.
    const uint64_t unused_experts = c.n_experts ? w_.expert_bytes / c.n_experts * (c.n_experts - c.top_k) : 0;
    info_.weight_bytes = loader.bytes_loaded() + w_.embed.nbytes();
    info_.kv_dtype = loader.kv_dtype();
    info_.weight_bytes_per_token = loader.bytes_loaded() - unused_experts + tied_head + embed_row;
  }

  const ModelInfo& info() const override { return info_; }

  // Attention layers: k, v [S, Hkv*d]. Mamba2 layers: conv [conv_dim, K] (the last K inputs of
  // the convolution) and ssm [n_heads, P, N]: constant in the context length.
  Cache make_cache(int64_t max_seq) const override {
    Cache cache(be_, std::min(max_seq, c_.max_positions));
    const int64_t kv_dim = int64_t{c_.n_kv_heads} * c_.head_dim, S = cache.max_seq();
    uint64_t bytes = 0;
    for (Mixer m : c_.mixer)
      bytes += m == Mixer::Attention ? 2 * static_cast<uint64_t>(S) * dtype_bytes(info_.kv_dtype, kv_dim)
                                     : (static_cast<uint64_t>(c_.conv_dim()) * c_.d_conv +
                                        static_cast<uint64_t>(c_.d_inner) * c_.d_state) * sizeof(float);
    cache.check_fits(bytes, "the cache (KV of the attention layers x " + std::to_string(S) +
                                                 " positions, plus the Mamba2 state)");
    for (Mixer m : c_.mixer) {
      LayerCache lc;
      if (m == Mixer::Attention) {
        lc.k = cache.alloc({S, kv_dim}, info_.kv_dtype);
        lc.v = cache.alloc({S, kv_dim}, info_.kv_dtype);
      } else {
        lc.conv = cache.alloc({c_.conv_dim(), c_.d_conv});
        lc.ssm = cache.alloc({c_.mamba_heads, c_.mamba_head_dim, c_.d_state});
      }
      cache.layers.push_back(lc);
    }
    return cache;
  }

  Tensor forward(std::span<const int32_t> tokens, Cache& cache, Logits which) override {
    const int64_t T = static_cast<int64_t>(tokens.size()), D = c_.hidden_size;
    check_room(cache, T, c_.max_positions);
    Tensor x = act_.get(X, T, D);                     // [T, D]  residual stream
    Tensor h = act_.get(H, T, D);                     // [T, D]  normed input / branch output

    be_.embed(x, w_.embed, tokens);
    be_.scale(x, x, c_.embedding_multiplier);         // h0 = embed[id] * embedding_multiplier
    trace(x, "embed");

    for (int l = 0; l < c_.n_layers; ++l) {
      const GraniteLayer& L = w_.layers[static_cast<size_t>(l)];
      const LayerCache& lc = cache.layers[static_cast<size_t>(l)];
      // mixer block: h = mixer(rms(x)); x += h * residual_multiplier
      be_.rmsnorm(h, x, L.attn_norm, c_.rms_norm_eps);
      trace(h, "attn_norm", l);
      if (L.mixer == Mixer::Attention)
        attention(h, h, L, lc, cache.n_past(), l);
      else
        mamba(h, h, L, lc, l);
      be_.add_scaled(x, h, c_.residual_multiplier);
      trace(x, "attn_residual", l);
      // FFN block: x += ffn(rms(x)) * residual_multiplier
      be_.rmsnorm(h, x, L.ffn_norm, c_.rms_norm_eps);
      trace(h, "ffn_norm", l);
      ffn(h, h, L, l);
      be_.add_scaled(x, h, c_.residual_multiplier);
      trace(x, "layer_out", l);
    }
    trace(x, "final_norm_input");

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
  enum Slot { X, H, QKV, ATT, ZXBCDT, XBC, Y, UP, ROUTER, XE, UE, YE, MOE, LOGITS, PROBS };  // activation buffers

  // Attention with a KV cache: out [T, D] from the normed input h [T, D] (out may be h).
  void attention(const Tensor& out, const Tensor& h, const GraniteLayer& L, const LayerCache& kv, int64_t pos0, int l) {
    const int64_t T = h.rows(), q_dim = int64_t{c_.n_heads} * c_.head_dim;
    const int64_t kv_dim = int64_t{c_.n_kv_heads} * c_.head_dim;
    const Tensor qkv = act_.get(QKV, T, q_dim + 2 * kv_dim);                // [T, Hq*d | Hkv*d | Hkv*d]
    const Tensor q = qkv.cols_view(0, q_dim), k = qkv.cols_view(q_dim, kv_dim), v = qkv.cols_view(q_dim + kv_dim, kv_dim);
    const Tensor att = act_.get(ATT, T, q_dim);                             // [T, Hq*d]
    matmul(be_, qkv, h, L.qkv);                      // q | k | v
    if (c_.rope) {                                   // Granite 3.x, or position_embedding_type "rope"
      const RopeTables& rope = rope_.upto(pos0 + T);
      be_.rope(q, c_.n_heads, c_.head_dim, c_.head_dim, pos0, rope.cos, rope.sin);
      be_.rope(k, c_.n_kv_heads, c_.head_dim, c_.head_dim, pos0, rope.cos, rope.sin);
      trace(q, "q_rope", l);
      trace(k, "k_rope", l);
    }
    append_kv(be_, kv, pos0, k, v);
    AttentionArgs args;
    args.n_heads = c_.n_heads;
    args.n_kv_heads = c_.n_kv_heads;
    args.head_dim = c_.head_dim;
    args.pos0 = pos0;
    args.scale = c_.attention_multiplier;            // instead of 1/sqrt(head_dim)
    args.probs = wants_attention_probs() ? act_.get(PROBS, int64_t{c_.n_heads} * T, pos0 + T).reshape({c_.n_heads, T, pos0 + T}) : Tensor{};
    be_.attention(att, q, kv.k, kv.v, args);         // [T, Hq*d]
    trace(att, "attn_out", l);
    if (!args.probs.empty()) trace(args.probs, "attn_probs", l);
    be_.matmul(out, att, L.wo, L.bo);                // [T, D]
  }

  // The Mamba2 mixer: out [T, D] from the normed input h [T, D] (out may be h), continuing from
  // and updating the layer's conv and SSM state.
  void mamba(const Tensor& out, const Tensor& h, const GraniteLayer& L, const LayerCache& state, int l) {
    const int64_t T = h.rows(), di = c_.d_inner, GN = int64_t{c_.n_groups} * c_.d_state;
    const Tensor zxbcdt = act_.get(ZXBCDT, T, c_.in_proj_dim());  // [T, d_inner + conv_dim + n_heads]
    const Tensor xbc = act_.get(XBC, T, c_.conv_dim());           // [T, conv_dim]
    const Tensor y = act_.get(Y, T, di);                          // [T, d_inner]
    const Tensor z = zxbcdt.cols_view(0, di);                     // [T, d_inner]  the gate
    const Tensor xbc_in = zxbcdt.cols_view(di, c_.conv_dim());    // [T, conv_dim] x | B | C before the conv
    const Tensor dt = zxbcdt.cols_view(di + c_.conv_dim(), c_.mamba_heads);  // [T, n_heads]
    be_.matmul(zxbcdt, h, L.in_proj, L.in_bias);     // [T, d_inner + conv_dim + n_heads]
    trace(zxbcdt, "ssm_in_proj", l);
    be_.conv1d_causal(xbc, xbc_in, L.conv_w, L.conv_b, state.conv);  // depthwise, causal, over time
    be_.silu(xbc, xbc);
    trace(xbc, "ssm_conv", l);
    SsmArgs args;
    args.n_heads = c_.mamba_heads;
    args.head_dim = c_.mamba_head_dim;
    args.d_state = c_.d_state;
    args.n_groups = c_.n_groups;
    args.chunk_size = c_.chunk_size;
    args.dt_min = c_.dt_min;
    args.dt_max = c_.dt_max;
    be_.ssm_scan(y, xbc.cols_view(0, di), dt, xbc.cols_view(di, GN), xbc.cols_view(di + GN, GN), L.A_log, L.D,
                 L.dt_bias, state.ssm, args);        // [T, d_inner], includes D * x
    trace(y, "ssm_scan", l);
    be_.silu_mul(y, z, y);                           // y * silu(z)
    be_.rmsnorm(y, y, L.ssm_norm, c_.rms_norm_eps);  // over the whole d_inner
    trace(y, "ssm_norm", l);
    be_.matmul(out, y, L.out_proj, L.out_bias);      // [T, D]
    trace(out, "ssm_out", l);
  }

  // The FFN: out [T, D] from the normed input h [T, D] (out may be h): the dense or shared
  // SwiGLU MLP, plus the mixture of experts when the layer has one.
  void ffn(const Tensor& out, const Tensor& h, const GraniteLayer& L, int l) {
    const int64_t T = h.rows(), D = c_.hidden_size;
    const Tensor moe = L.router.empty() ? Tensor{} : act_.get(MOE, T, D);  // [T, D]  the experts' sum
    if (!moe.empty()) experts(moe, h, L, l);
    if (!L.w_down.empty()) {
      const int64_t F = L.w_down.cols();
      const Tensor up = act_.get(UP, T, 2 * F);      // [T, 2F]  gate | up
      const Tensor gate = up.cols_view(0, F);
      matmul(be_, up, h, L.gate_up);                 // [T, 2F]
      be_.silu_mul(gate, gate, up.cols_view(F, F));  // silu(gate) * up
      trace(gate, "ffn_act", l);
      be_.matmul(out, gate, L.w_down, L.b_down);     // [T, D]
      if (!moe.empty()) be_.add(out, out, moe);
    } else {
      be_.copy(out, moe);
    }
  }

  // Mixture of experts: out [T, D] = sum over each token's top-k experts of gate * expert(h).
  // The router's top-k is chosen on the host; then each expert runs once on the rows routed
  // to it (gathered, a GEMM for a prefill), and adds its rows back weighted by their gates.
  void experts(const Tensor& out, const Tensor& h, const GraniteLayer& L, int l) {
    const int64_t T = h.rows(), D = c_.hidden_size, I = c_.expert_size, E = c_.n_experts;
    const Tensor logits = act_.get(ROUTER, T, E);    // [T, E]
    const Tensor xe = act_.get(XE, T, D);            // [n_e, D]  the rows routed to expert e
    const Tensor ue = act_.get(UE, T, 2 * I);        // [n_e, 2I] gate | up
    const Tensor ye = act_.get(YE, T, D);            // [n_e, D]
    be_.matmul(logits, h, L.router, Tensor{});       // router.layer: [T, E]
    trace(logits, "moe_router", l);
    router_host_.assign(static_cast<size_t>(T * E), 0.0f);
    be_.download(router_host_.data(), logits);
    // route[e]: (token, gate) pairs; top-k by logit (ties: lower expert first), softmax over the k
    std::vector<std::vector<std::pair<int64_t, float>>> route(static_cast<size_t>(E));
    std::vector<int> order(static_cast<size_t>(E));
    for (int64_t t = 0; t < T; ++t) {
      const float* r = router_host_.data() + t * E;
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), [&](int a, int b) { return r[a] > r[b] || (r[a] == r[b] && a < b); });
      const float top = r[order[0]];
      double sum = 0;
      for (int i = 0; i < c_.top_k; ++i) sum += std::exp(static_cast<double>(r[order[static_cast<size_t>(i)]] - top));
      for (int i = 0; i < c_.top_k; ++i) {
        const int e = order[static_cast<size_t>(i)];
        route[static_cast<size_t>(e)].push_back({t, static_cast<float>(std::exp(static_cast<double>(r[e] - top)) / sum)});
      }
    }
    std::vector<char> written(static_cast<size_t>(T), 0);  // a token's first expert sets its row, the rest add
    for (int64_t e = 0; e < E; ++e) {
      const auto& rows = route[static_cast<size_t>(e)];
      const int64_t n = static_cast<int64_t>(rows.size());
      if (n == 0) continue;
      for (int64_t i = 0; i < n; ++i) be_.copy(xe.rows_view(i, 1), h.rows_view(rows[static_cast<size_t>(i)].first, 1));
      const Tensor u = ue.rows_view(0, n), gate = u.cols_view(0, I);
      be_.matmul(u, xe.rows_view(0, n), L.experts_in.rows_view(e * 2 * I, 2 * I), Tensor{});  // [n, 2I]
      be_.silu_mul(gate, gate, u.cols_view(I, I));   // silu(gate) * up
      be_.matmul(ye.rows_view(0, n), gate, L.experts_out.rows_view(e * D, D), Tensor{});    // [n, D]
      for (int64_t i = 0; i < n; ++i) {
        const auto [t, g] = rows[static_cast<size_t>(i)];
        if (written[static_cast<size_t>(t)]++) be_.add_scaled(out.rows_view(t, 1), ye.rows_view(i, 1), g);  // out += g * y
        else be_.scale(out.rows_view(t, 1), ye.rows_view(i, 1), g);                                         // out = g * y
      }
    }
    trace(out, "moe_out", l);
  }

  // The final norm and the output head: residual x [R, D] -> logits [R, V] / logits_scaling.
  Tensor head(const Tensor& x) {
    const Tensor h = act_.get(H, x.rows(), c_.hidden_size);           // [R, D]
    be_.rmsnorm(h, x, w_.norm, c_.rms_norm_eps);
    trace(h, "final_norm");
    const Tensor logits = act_.get(LOGITS, x.rows(), c_.vocab_size);  // [R, V]
    be_.matmul(logits, h, w_.lm_head, Tensor{});
    be_.scale(logits, logits, 1.0f / c_.logits_scaling);
    return logits;
  }

  GraniteConfig c_;
  ModelInfo info_;
  Backend& be_;
  GraniteWeights w_;
  Activations act_;
  RopeCache rope_;
  std::vector<float> router_host_;  // [T, E] router logits on the host
  std::vector<std::shared_ptr<void>> memory_;
  AlignedBuffer host_logits_;
};

std::unique_ptr<Model> load_granite(const nlohmann::json& config, const WeightFiles& files, const LoadOptions& options) {
  const GraniteConfig c = GraniteConfig::from_json(config);
  WeightLoader loader(files, options, {"model.", ""});
  ModelInfo info;
  info.architecture = c.model_type;
  info.model_type = c.model_type;
  info.vocab_size = c.vocab_size;
  info.max_context = c.max_positions;
  info.n_layers = c.n_layers;
  info.hidden_size = c.hidden_size;
  read_special_ids(ConfigReader(config), info);
  return std::make_unique<Granite>(c, loader, std::move(info));
}

const ModelRegistration registration("granite", {"granitemoehybrid", "granite", "granitemoe", "granitemoeshared"},
                                     {"GraniteMoeHybridForCausalLM", "GraniteForCausalLM", "GraniteMoeForCausalLM",
                                      "GraniteMoeSharedForCausalLM"},
                                     load_granite);

}  // namespace
}  // namespace purellm
