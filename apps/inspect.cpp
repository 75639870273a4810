// inspect: what a model is and what it costs, before or after downloading it.
//
//   inspect -m DIR|ALIAS                 architecture, config highlights, tensor table,
//                                        parameters, bytes per token, memory plan
//   inspect -m DIR|ALIAS --plan -c 8192  just the memory plan (config.json is enough)
//   inspect -m DIR --trace t.safetensors "prompt"   every intermediate of the forward pass
//   inspect -m DIR --logit-lens "prompt"            what each layer "thinks" the next token is
//
// Everything here goes through the Model interface and the planner: no model-specific code.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "apps/app_common.hpp"
#include "models/planner.hpp"
#include "models/trace.hpp"
#include "tensor/cpu/cpu_backend.hpp"
#include "tokenizer/tokenizer.hpp"

using namespace purellm;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const char* kUsage = R"(usage: inspect -m DIR|ALIAS [options] ["prompt"]

  -m, --model DIR|ALIAS   model folder or models.json alias (config.json alone is enough
                          for the description and the memory plan)
  -c, --ctx N             context to plan for (default: the model's maximum)
      --dtype D           plan (and load) with matrices in D: f32, f16, bf16, q8_0, q4_0
      --plan              only the memory plan
      --tensors           list every tensor (default: layers folded into one row per name)
      --json              print the description as one JSON object (or the logit lens)
  with a prompt (needs the weights):
      --trace FILE        write every named intermediate of the forward pass to FILE
                          (safetensors: "embed", "layer_out.3", ... F32 [T, width])
      --trace-attn        also the attention probabilities "attn_probs.N" [heads, T, keys]
      --logit-lens        per layer, the top tokens the final norm + head read from the
                          residual stream at the last position
  -k, --top-k N           tokens per layer for --logit-lens (default 5)
      --prompt-ids 1,2,3  feed token ids instead of text (no tokenizer needed)
  -t, --threads N         worker threads
  -h, --help              this text
)";

struct InspectArgs {
  std::string model;
  int64_t ctx = 0;
  std::optional<DType> dtype;
  bool plan_only = false, all_tensors = false, as_json = false;
  std::string trace_file;
  bool trace_attn = false, logit_lens = false;
  int top_k = 5;
  std::string prompt, prompt_ids;
  bool has_prompt = false;
  int threads = 0;
};

InspectArgs parse_args(int argc, char** argv) {
  InspectArgs a;
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) throw std::runtime_error(std::string(argv[i]) + " needs a value");
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (f == "-h" || f == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (f == "-m" || f == "--model") a.model = value(i);
    else if (f == "-c" || f == "--ctx") a.ctx = app::parse_int(f, value(i), 1, 1 << 24);
    else if (f == "--dtype") {
      const std::string d = value(i);
      a.dtype = dtype_from_flag(d);
      if (!a.dtype || !traits(*a.dtype).is_float) throw std::runtime_error("--dtype: unknown dtype \"" + d + "\" (f32, f16, bf16, q8_0, q4_0)");
    } else if (f == "--plan") a.plan_only = true;
    else if (f == "--tensors") a.all_tensors = true;
    else if (f == "--json") a.as_json = true;
    else if (f == "--trace") a.trace_file = value(i);
    else if (f == "--trace-attn") a.trace_attn = true;
    else if (f == "--logit-lens") a.logit_lens = true;
    else if (f == "-k" || f == "--top-k") a.top_k = static_cast<int>(app::parse_int(f, value(i), 1, 1000));
    else if (f == "--prompt-ids") a.prompt_ids = value(i);
    else if (f == "-t" || f == "--threads") a.threads = static_cast<int>(app::parse_int(f, value(i), 1, 1024));
    else if (f == "-p" || f == "--prompt") a.prompt = value(i), a.has_prompt = true;
    else if (!f.empty() && f[0] == '-' && f.size() > 1) throw std::runtime_error("unknown option " + f + " (see --help)");
    else if (!a.has_prompt) a.prompt = f, a.has_prompt = true;
    else throw std::runtime_error("more than one prompt given: \"" + f + "\" (quote the prompt)");
  }
  if (a.model.empty()) throw std::runtime_error("no model given: inspect -m DIR|ALIAS (see --help)");
  const bool runs = !a.trace_file.empty() || a.logit_lens;
  if (runs && !a.has_prompt && a.prompt_ids.empty()) throw std::runtime_error("--trace and --logit-lens need a prompt");
  if (!runs && (a.has_prompt || !a.prompt_ids.empty()))
    throw std::runtime_error("a prompt is only used with --trace or --logit-lens");
  if (a.trace_attn && a.trace_file.empty()) throw std::runtime_error("--trace-attn needs --trace FILE");
  return a;
}

// ---- description --------------------------------------------------------------------------

// config.json keys worth showing when present (any family; absent keys are skipped).
const char* kHighlights[] = {
    "torch_dtype", "dtype", "hidden_size", "n_embd", "num_hidden_layers", "n_layer", "num_attention_heads",
    "n_head", "num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query", "head_dim", "intermediate_size",
    "n_inner", "ffn_dim", "ffn_hidden_size", "max_position_embeddings", "n_positions", "seq_length", "rope_theta",
    "rope_scaling", "rope_parameters", "rotary_pct", "partial_rotary_factor", "sliding_window", "alibi",
    "position_embedding_type", "tie_word_embeddings", "hidden_act", "activation_function", "mamba_d_state",
    "mamba_d_conv", "mamba_n_heads", "mamba_d_head", "mamba_n_groups", "mamba_expand", "num_local_experts",
    "num_experts_per_tok"};

json config_highlights(const json& config) {
  json h = json::object();
  for (const char* key : kHighlights)
    if (config.contains(key) && !config[key].is_null()) h[key] = config[key];
  if (config.contains("layer_types") && config["layer_types"].is_array()) {  // counts, not 32 names
    std::map<std::string, int> counts;
    for (const auto& t : config["layer_types"]) counts[t.is_string() ? t.get<std::string>() : t.dump()]++;
    h["layer_types"] = counts;
  }
  return h;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Tensors of every layer folded into one row per name ("layers.N.mlp.up_proj.weight  x32").
struct TensorRow {
  std::string name;
  const PlannedTensor* first;
  int count;
};

std::vector<TensorRow> tensor_rows(const std::vector<PlannedTensor>& tensors, bool fold) {
  static const std::regex layer_index(R"(\.(\d+)\.)");
  std::vector<TensorRow> rows;
  std::map<std::string, size_t> seen;
  for (const PlannedTensor& t : tensors) {
    const std::string name = fold ? std::regex_replace(t.name, layer_index, ".N.", std::regex_constants::format_first_only) : t.name;
    const std::string key = name + " " + std::string(dtype_name(t.dtype)) + shape_text(t.shape);
    if (auto it = seen.find(key); fold && it != seen.end()) {
      rows[it->second].count++;
      continue;
    }
    seen[key] = rows.size();
    rows.push_back({name, &t, 1});
  }
  return rows;
}

struct PlanRow {
  std::string label;
  ModelPlan plan;
};

std::vector<PlanRow> plan_rows(const json& config, const WeightFiles* files, const InspectArgs& a) {
  std::vector<PlanRow> rows;
  auto add = [&](const std::string& label, std::optional<DType> dtype) {
    PlanOptions o;
    o.weight_dtype = dtype;
    o.context = a.ctx;
    rows.push_back({label, plan_model(config, files, o)});
  };
  if (a.dtype) {
    add(std::string(dtype_name(*a.dtype)), a.dtype);
    return rows;
  }
  add("as stored", std::nullopt);
  rows.front().label += " (" + std::string(dtype_name(rows.front().plan.stored_dtype)) + ")";
  add("F32", DType::F32);
  add("F16/BF16", DType::F16);
  add("Q8_0", DType::Q8_0);
  add("Q4_0", DType::Q4_0);
  return rows;
}

std::string with_commas(uint64_t n) {
  std::string s = std::to_string(n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), ",");
  return s;
}

void print_plan(const std::vector<PlanRow>& rows, uint64_t available) {
  const ModelPlan& p = rows.front().plan;
  std::printf("\nmemory plan: context %lld of %lld, prefill %lld tokens; MemAvailable %s\n",
              static_cast<long long>(p.context), static_cast<long long>(p.info.max_context),
              static_cast<long long>(p.prefill), available ? format_bytes(available).c_str() : "unknown");
  std::printf("  cache: %s per token (KV)", format_bytes(p.cache_bytes_per_token).c_str());
  if (p.cache_fixed_bytes) std::printf(" + %s constant state (recurrent layers)", format_bytes(p.cache_fixed_bytes).c_str());
  std::printf(", F32\n");
  std::printf("  %-16s %11s %11s %11s %11s %11s  %-5s %s\n", "weights", "weights", "read/token", "cache",
              "activations", "total", "fits", "largest context that fits");
  for (const PlanRow& r : rows) {
    const ModelPlan& q = r.plan;
    const bool fits = available && plan_fits(q, available);
    const int64_t largest = available ? largest_context(q, available) : 0;
    std::printf("  %-16s %11s %11s %11s %11s %11s  %-5s %lld\n", r.label.c_str(), format_bytes(q.weight_bytes()).c_str(),
                format_bytes(q.info.weight_bytes_per_token).c_str(), format_bytes(q.cache_bytes).c_str(),
                format_bytes(q.activation_bytes).c_str(), format_bytes(q.total_bytes()).c_str(),
                available ? (fits ? "yes" : "no") : "?", static_cast<long long>(largest));
  }
  std::printf("  (fits: total + %s for the program, tokenizer and kernel scratch <= MemAvailable)\n",
              format_bytes(kPlanReserveBytes).c_str());
}

json plan_json(const PlanRow& r, uint64_t available) {
  const ModelPlan& q = r.plan;
  return {{"dtype", r.label},
          {"weight_bytes", q.weight_bytes()},
          {"weight_bytes_per_token", q.info.weight_bytes_per_token},
          {"cache_bytes", q.cache_bytes},
          {"activation_bytes", q.activation_bytes},
          {"total_bytes", q.total_bytes()},
          {"fits", available && plan_fits(q, available)},
          {"largest_context", available ? largest_context(q, available) : 0}};
}

int describe(const std::string& dir, const InspectArgs& a) {
  const json config = read_json_file((fs::path(dir) / "config.json").string());
  std::optional<WeightFiles> files;
  if (has_weights(dir)) files = WeightFiles::open(dir, LoadMode::Mmap);  // headers only
  const std::vector<PlanRow> rows = plan_rows(config, files ? &*files : nullptr, a);
  const ModelPlan& p = rows.front().plan;
  const uint64_t available = mem_available_bytes();

  if (a.as_json) {
    json out = {{"model", dir},
                {"architecture", p.info.architecture},
                {"model_type", p.info.model_type},
                {"vocab_size", p.info.vocab_size},
                {"max_context", p.info.max_context},
                {"n_layers", p.info.n_layers},
                {"hidden_size", p.info.hidden_size},
                {"has_weights", files.has_value()},
                {"stored_dtype", std::string(dtype_name(p.stored_dtype))},
                {"parameters", p.parameters},
                {"weight_bytes", p.weight_bytes()},
                {"weight_bytes_per_token", p.info.weight_bytes_per_token},
                {"cache_bytes_per_token", p.cache_bytes_per_token},
                {"cache_fixed_bytes", p.cache_fixed_bytes},
                {"context", p.context},
                {"prefill", p.prefill},
                {"mem_available", available},
                {"reserve_bytes", kPlanReserveBytes},
                {"config", config_highlights(config)}};
    for (const PlanRow& r : rows) out["plans"].push_back(plan_json(r, available));
    out["tensors"] = json::array();
    for (const PlannedTensor& t : p.tensors)
      out["tensors"].push_back({{"name", t.name}, {"dtype", std::string(dtype_name(t.dtype))},
                                {"stored_dtype", std::string(dtype_name(t.stored))}, {"shape", t.shape}, {"bytes", t.bytes}});
    std::printf("%s\n", out.dump(1).c_str());
    return 0;
  }

  if (!a.plan_only) {
    std::printf("%s: %s (model_type %s)%s\n", dir.c_str(), p.info.architecture.c_str(), p.info.model_type.c_str(),
                files ? "" : "  [config only: weights not downloaded]");
    std::printf("  vocab %lld, context %lld, %d layers, hidden %d\n", static_cast<long long>(p.info.vocab_size),
                static_cast<long long>(p.info.max_context), p.info.n_layers, p.info.hidden_size);
    const json h = config_highlights(config);
    std::string line = "  config:";
    for (auto it = h.begin(); it != h.end(); ++it) {
      const std::string item = " " + it.key() + " " + it.value().dump();
      if (line.size() + item.size() > 100) std::printf("%s\n", line.c_str()), line = "         ";
      line += item;
    }
    std::printf("%s\n", line.c_str());
    std::printf("  parameters %s (%.1f M), stored as %s: %s\n", with_commas(p.parameters).c_str(),
                static_cast<double>(p.parameters) / 1e6, std::string(dtype_name(p.stored_dtype)).c_str(),
                format_bytes(p.weight_bytes()).c_str());
    std::printf("  a decoded token reads %s of weights (tokens/s <= bandwidth / this)\n",
                format_bytes(p.info.weight_bytes_per_token).c_str());
    std::printf("\ntensors%s, dtype and shape in memory (matrices [out, in]; the token embedding keeps its stored dtype):\n",
                a.all_tensors ? "" : " (layers folded: N)");
    const std::vector<TensorRow> table = tensor_rows(p.tensors, !a.all_tensors);
    int width = 0;
    for (const TensorRow& r : table) width = std::max(width, static_cast<int>(r.name.size()));
    for (const TensorRow& r : table) {
      const std::string count = r.count > 1 ? "x" + std::to_string(r.count) : "";
      std::printf("  %-*s %5s %-5s %-16s %10s\n", width, r.name.c_str(), count.c_str(),
                  std::string(dtype_name(r.first->dtype)).c_str(), shape_text(r.first->shape).c_str(),
                  format_bytes(r.first->bytes).c_str());
    }
  }
  print_plan(rows, available);
  return 0;
}

// ---- running a prompt ---------------------------------------------------------------------

std::string token_label(const Tokenizer* tok, int32_t id) {
  if (!tok) return "#" + std::to_string(id);
  std::string s = tok->decode(std::span<const int32_t>(&id, 1));
  // Decoding one token drops a SentencePiece word's leading space; show it.
  const std::string piece = tok->token_text(id);
  if ((piece.rfind("\u2581", 0) == 0 || piece.rfind("\u0120", 0) == 0) && s.rfind(' ', 0) != 0) s = " " + s;
  std::string out;
  for (char c : s) out += c == '\n' ? std::string("\\n") : std::string(1, c);
  return out;
}

struct Top {
  int32_t id;
  float logit, prob;
};

std::vector<Top> top_k(std::span<const float> logits, int k) {
  const float mx = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float v : logits) sum += std::exp(static_cast<double>(v - mx));
  std::vector<int32_t> ids(logits.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  k = std::min<int>(k, static_cast<int>(ids.size()));
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int32_t x, int32_t y) {
    return logits[static_cast<size_t>(x)] > logits[static_cast<size_t>(y)];
  });
  std::vector<Top> out;
  for (int i = 0; i < k; ++i) {
    const float v = logits[static_cast<size_t>(ids[static_cast<size_t>(i)])];
    out.push_back({ids[static_cast<size_t>(i)], v, static_cast<float>(std::exp(static_cast<double>(v - mx)) / sum)});
  }
  return out;
}

// The residual stream after each stage: the embedding, then every layer's output.
std::vector<std::string> lens_stages(const TraceRecorder& rec, int n_layers) {
  std::vector<std::string> stages;
  if (rec.find("embed")) stages.push_back("embed");
  for (int l = 0; l < n_layers; ++l)
    if (rec.find(trace_name("layer_out", l))) stages.push_back(trace_name("layer_out", l));
  return stages;
}

int logit_lens(Model& model, const TraceRecorder& rec, std::span<const float> output, const Tokenizer* tok,
               const InspectArgs& a) {
  const int64_t V = model.info().vocab_size;
  json out = {{"stages", json::array()}};
  if (!a.as_json)
    std::printf("logit lens: the top %d next tokens read from the residual stream at the last position\n", a.top_k);
  auto show = [&](const std::string& stage, std::span<const float> logits) {
    json tops = json::array();
    std::string line;
    for (const Top& t : top_k(logits, a.top_k)) {
      tops.push_back({{"id", t.id}, {"token", token_label(tok, t.id)}, {"logit", t.logit}, {"prob", t.prob}});
      char buf[64];
      std::snprintf(buf, sizeof buf, " %.2f", t.prob);
      line += "  '" + token_label(tok, t.id) + "'" + buf;
    }
    out["stages"].push_back({{"stage", stage}, {"top", tops}});
    if (!a.as_json) std::printf("  %-14s%s\n", stage.c_str(), line.c_str());
  };
  double max_diff = 0;
  for (const std::string& stage : lens_stages(rec, model.info().n_layers)) {
    const Tensor residual = rec.view(stage);
    const Tensor last = residual.rows_view(residual.rows() - 1, 1);  // [1, D]
    const Tensor logits = model.project_to_vocab(last);
    const std::span<const float> row(logits.ptr<const float>(), static_cast<size_t>(V));
    if (stage == trace_name("layer_out", model.info().n_layers - 1))
      for (int64_t i = 0; i < V; ++i) max_diff = std::max(max_diff, std::fabs(double(row[i]) - double(output[i])));
    show(stage, row);
  }
  show("output", output);
  out["last_layer_vs_output_max_abs_diff"] = max_diff;
  if (a.as_json) std::printf("%s\n", out.dump(1, ' ', false, json::error_handler_t::replace).c_str());
  else std::printf("  (the last layer through the head vs the model's own logits: max |diff| %.3g)\n", max_diff);
  return 0;
}

int run_prompt(const std::string& dir, const InspectArgs& a) {
  if (!has_weights(dir))
    throw std::runtime_error(dir + ": the weights are not downloaded; the description and --plan need only config.json, "
                                   "but --trace and --logit-lens run the model");
  std::optional<Tokenizer> tokenizer;
  if (a.prompt_ids.empty() || fs::exists(fs::path(dir) / "tokenizer.json")) tokenizer = Tokenizer::load(dir);
  LoadOptions load;
  load.weight_dtype = a.dtype;
  std::unique_ptr<Model> model = load_model(dir, load);
  const ModelInfo& info = model->info();
  const std::vector<int32_t> ids = a.prompt_ids.empty() ? tokenizer->encode(a.prompt, /*add_special=*/true)
                                                        : app::parse_prompt_ids(a.prompt_ids, info.vocab_size);
  if (ids.empty()) throw std::runtime_error("the prompt encodes to no tokens");
  for (int32_t id : ids)
    if (id >= info.vocab_size) throw std::runtime_error("token id " + std::to_string(id) + " is outside the model's vocabulary");

  TraceRecorder rec(a.trace_attn);
  model->set_tracer(&rec);
  Cache cache = model->make_cache(static_cast<int64_t>(ids.size()));
  const Tensor logits = model->forward(ids, cache, Logits::All);  // every position: final_norm is [T, D] too
  model->set_tracer(nullptr);
  const int64_t V = info.vocab_size, T = static_cast<int64_t>(ids.size());
  const std::vector<float> last(logits.row<float>(T - 1), logits.row<float>(T - 1) + V);

  if (!a.trace_file.empty()) {
    json tokens = json::array();
    for (int32_t id : ids) tokens.push_back(token_label(tokenizer ? &*tokenizer : nullptr, id));
    rec.write(a.trace_file, ids,
              {{"model", dir}, {"architecture", info.architecture}, {"n_layers", std::to_string(info.n_layers)},
               {"tokens", tokens.dump(-1, ' ', false, json::error_handler_t::replace)}});
    std::fprintf(stderr, "inspect: wrote %zu tensors for %lld tokens to %s\n", rec.entries().size() + 1,
                 static_cast<long long>(T), a.trace_file.c_str());
  }
  if (a.logit_lens) return logit_lens(*model, rec, last, tokenizer ? &*tokenizer : nullptr, a);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const InspectArgs a = parse_args(argc, argv);
    cpu::set_num_threads(a.threads);
    const app::ResolvedModel resolved = app::resolve_model(a.model);
    if (!a.trace_file.empty() || a.logit_lens) return run_prompt(resolved.dir, a);
    return describe(resolved.dir, a);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "inspect: error: %s\n", e.what());
    return 1;
  }
}
