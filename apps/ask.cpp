// ask: the front door. `ask [-m DIR|ALIAS] [options] "prompt"` streams a continuation.
// Installed also as `ask-gpt2` (= ask -m gpt2), the name users of the Go ancestor know.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "apps/app_common.hpp"
#include "apps/chat_template.hpp"
#include "apps/op_profile.hpp"
#include "models/generate.hpp"
#include "models/planner.hpp"
#include "models/trace.hpp"
#include "tensor/backend_loader.hpp"
#include "tensor/cpu/cpu_backend.hpp"
#include "tokenizer/tokenizer.hpp"

using namespace purellm;

namespace {

const char* kUsage = R"(usage: ask [-m DIR|ALIAS] [options] "prompt"

  -m, --model DIR|ALIAS   model folder, or an alias from models.json (default: gpt2);
                          auto: the largest downloaded model whose memory plan fits
  -p, --prompt TEXT       the prompt (or give it as the last argument)
  -n, --n-predict N       tokens to generate (default 64)
      --greedy            always take the most likely token
      --temp T            sampling temperature (default 0.8; 0 = greedy)
      --top-k K           keep the K most likely tokens (default 40; 0 = off)
      --top-p P           nucleus sampling threshold (default 0.95; 1 = off)
      --repeat-penalty R  penalise tokens already present (default 1.0 = off)
      --seed S            random seed (default 0)
      --ignore-eos        keep generating after an end-of-sequence token
  -t, --threads N         worker threads (default: all cores)
      --device D          cpu (default) or cuda: the GPU plug-in libpurellm_cuda.so, built
                          with the cuda preset (see README, "Jetson")
  -c, --ctx N             KV cache size in tokens (default: prompt + n, at most the model's context)
      --mmap              use weights in place from the mapped file (less memory, slower on VMs)
      --dtype D           convert weights at load: f32, f16, bf16, q8_0, q4_0 (GGUF
                          blocks of 32; embeddings, norms and biases keep their dtype)
      --kv-dtype D        the KV cache: f32 or f16 (default: f16 with q8_0 / q4_0 weights,
                          else f32; f16 halves its memory and the bytes decode reads)
      --stats             print load time, prefill/decode speed, GB/s and peak memory to stderr
      --random-weights CONFIG.json
                          build the model from a config with random weights (speed
                          measurements without downloads; needs --prompt-ids)
      --prompt-ids 1,2,3  feed token ids instead of text
      --print-ids         print one line: prompt ids then generated ids, space separated
      --raw               do not apply the model's chat template to the prompt
      --template NAME     chat format: raw, chatml, llama2, llama3, zephyr, granite, dialogpt
                          (default: recognised from the model's chat_template, if it has one)
      --system TEXT       a system message before the prompt (chat models)
      --trace FILE        write every intermediate of the prompt's forward pass to FILE
                          (safetensors, "layer_out.3" ... F32 [T, width]; see inspect)
      --trace-attn        also the attention probabilities "attn_probs.N" [heads, T, keys]
      --profile           time the decode steps per layer (CPU: ops run synchronously) and print
                          the share spent in Mamba2 layers, attention layers and the rest; then
                          per op (matrix products per weight shape, with their weights' GB/s)
  -h, --help              this text
)";

struct AskArgs {
  std::string model = "gpt2";
  std::string prompt;
  bool has_prompt = false;
  int64_t n_predict = 64;
  SamplingOptions sampling;
  bool ignore_eos = false;
  int threads = 0;
  std::string device = "cpu";
  int64_t ctx = 0;
  LoadOptions load;
  bool stats = false;
  std::string prompt_ids;
  bool print_ids = false;
  std::string random_config;
  bool raw = false;
  std::string template_name;
  std::optional<std::string> system;
  std::string trace_file;
  bool trace_attn = false;
  bool profile = false;
};

AskArgs parse_args(int argc, char** argv) {
  AskArgs a;
  if (std::filesystem::path(argv[0]).filename() == "ask-gpt2") a.model = "gpt2";
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
    else if (f == "-p" || f == "--prompt") { a.prompt = value(i); a.has_prompt = true; }
    else if (f == "-n" || f == "--n-predict") a.n_predict = app::parse_int(f, value(i), 0, 1 << 24);
    else if (f == "--greedy") a.sampling.greedy = true;
    else if (f == "--temp") a.sampling.temperature = static_cast<float>(app::parse_float(f, value(i), 0.0, 100.0));
    else if (f == "--top-k") a.sampling.top_k = static_cast<int>(app::parse_int(f, value(i), 0, 1 << 30));
    else if (f == "--top-p") a.sampling.top_p = static_cast<float>(app::parse_float(f, value(i), 1e-6, 1.0));
    else if (f == "--repeat-penalty") a.sampling.repetition_penalty = static_cast<float>(app::parse_float(f, value(i), 1e-3, 100.0));
    else if (f == "--seed") a.sampling.seed = static_cast<uint64_t>(app::parse_int(f, value(i), 0, INT64_MAX));
    else if (f == "--ignore-eos") a.ignore_eos = true;
    else if (f == "-t" || f == "--threads") a.threads = static_cast<int>(app::parse_int(f, value(i), 1, 1024));
    else if (f == "--device") a.device = value(i);
    else if (f == "-c" || f == "--ctx") a.ctx = app::parse_int(f, value(i), 1, 1 << 24);
    else if (f == "--mmap") a.load.mode = LoadMode::Mmap;
    else if (f == "--dtype") a.load.weight_dtype = app::parse_weight_dtype(value(i));
    else if (f == "--kv-dtype") a.load.kv_dtype = app::parse_kv_dtype(value(i));
    else if (f == "--stats") a.stats = true;
    else if (f == "--prompt-ids") a.prompt_ids = value(i);
    else if (f == "--print-ids") a.print_ids = true;
    else if (f == "--random-weights") a.random_config = value(i);
    else if (f == "--raw") a.raw = true;
    else if (f == "--template") a.template_name = value(i);
    else if (f == "--system") a.system = value(i);
    else if (f == "--trace") a.trace_file = value(i);
    else if (f == "--trace-attn") a.trace_attn = true;
    else if (f == "--profile") a.profile = true;
    else if (!f.empty() && f[0] == '-' && f.size() > 1) throw std::runtime_error("unknown option " + f + " (see --help)");
    else if (!a.has_prompt) { a.prompt = f; a.has_prompt = true; }
    else throw std::runtime_error("more than one prompt given: \"" + f + "\" (quote the prompt)");
  }
  if (!a.has_prompt && a.prompt_ids.empty()) throw std::runtime_error("no prompt given (see --help)");
  if (a.trace_attn && a.trace_file.empty()) throw std::runtime_error("--trace-attn needs --trace FILE");
  if (a.profile && !a.trace_file.empty()) throw std::runtime_error("--profile and --trace cannot be combined");
  if (a.raw && !a.template_name.empty()) throw std::runtime_error("--raw and --template contradict each other");
  return a;
}

// -m auto: of the folders under models/ with config.json and weights, the largest whose
// memory plan (at the context this run needs) fits in MemAvailable.
std::string auto_model(int64_t context) {
  std::vector<std::string> dirs = app::downloaded_models(), notes;
  const auto best = largest_fitting_model(dirs, context, mem_available_bytes(), &notes);
  if (!best) {
    std::string msg = "-m auto: no downloaded model fits in memory (" + format_bytes(mem_available_bytes()) + " available)";
    for (const std::string& n : notes) msg += "\n  " + n;
    if (dirs.empty()) msg += "; none is downloaded in " + app::models_dir() + " (python3 models_download.py ALIAS)";
    throw std::runtime_error(msg);
  }
  std::fprintf(stderr, "[auto] %s\n", best->c_str());
  return *best;
}

// The prompt's token ids: the chat template applied for chat models (unless --raw).
std::vector<int32_t> encode_prompt(const AskArgs& a, const std::string& dir, const Tokenizer& tok,
                                   std::optional<chat::Template>& tmpl) {
  if (!a.raw) {
    try {
      tmpl = chat::template_for(dir, a.template_name);
    } catch (const std::exception& e) {
      if (!a.template_name.empty()) throw;
      std::fprintf(stderr, "ask: %s\nask: using the prompt as plain text\n", e.what());
    }
  }
  if (!tmpl) return tok.encode(a.prompt, /*add_special=*/true);
  std::vector<chat::Message> messages;
  if (a.system) messages.push_back({"system", *a.system});
  messages.push_back({"user", a.prompt});
  return tok.encode(tmpl->render(messages, /*add_generation_prompt=*/true), tmpl->add_special());
}

// --profile: the model's trace points as a clock. The time from one trace point to the next is
// charged to the layer of the later one (layer -1: embedding, head, sampling), and a layer is
// "Mamba2" when it traced ssm_scan, "attention" when it traced attn_out. On the CPU every op
// has finished when it returns, so the split is the ops' own time.
class DecodeProfiler final : public Tracer {
 public:
  void record(std::string_view name, int layer, const Tensor&) override {
    const auto now = std::chrono::steady_clock::now();
    if (name == "embed") ++tokens_;  // one decode step
    if (started_) {
      const double s = std::chrono::duration<double>(now - last_).count();
      if (layer < 0) other_ += s;
      else {
        if (static_cast<size_t>(layer) >= layers_.size()) layers_.resize(static_cast<size_t>(layer) + 1);
        layers_[static_cast<size_t>(layer)].seconds += s;
        if (name == "ssm_scan") layers_[static_cast<size_t>(layer)].kind = "Mamba2";
        if (name == "attn_out") layers_[static_cast<size_t>(layer)].kind = "attention";
      }
    }
    started_ = true;
    last_ = now;
  }
  void print() const {
    std::map<std::string, std::pair<double, int>> by_kind;
    double total = other_;
    for (const Layer& l : layers_) {
      by_kind[l.kind].first += l.seconds;
      by_kind[l.kind].second += 1;
      total += l.seconds;
    }
    std::fprintf(stderr, "[profile] %lld decode steps, %.3f s in all\n", static_cast<long long>(tokens_), total);
    for (const auto& [kind, v] : by_kind)
      std::fprintf(stderr, "[profile] %-9s layers: %2d, %.3f s = %4.1f%% (%.2f ms per layer per token)\n", kind.c_str(),
                   v.second, v.first, 100.0 * v.first / total, 1e3 * v.first / v.second / std::max<int64_t>(tokens(), 1));
    std::fprintf(stderr, "[profile] other (embedding, head, sampling): %.3f s = %4.1f%%\n", other_, 100.0 * other_ / total);
  }
  int64_t tokens() const { return tokens_; }

 private:
  struct Layer {
    std::string kind = "other";
    double seconds = 0;
  };
  bool started_ = false;
  std::chrono::steady_clock::time_point last_;
  std::vector<Layer> layers_;
  double other_ = 0;
  int64_t tokens_ = 0;
};

void print_stats(const ModelInfo& info, const Backend& backend, double load_seconds, const GenerationStats& st) {
  const double gbs = st.decode_tokens_per_second() * static_cast<double>(info.weight_bytes_per_token) / 1e9;
  std::fprintf(stderr,
               "\n[stats] %s on %s, %d threads\n"
               "[stats] load:    %.3f s (%.1f MB of weights)\n"
               "[stats] prefill: %lld tokens in %.3f s = %.1f tok/s\n"
               "[stats] decode:  %lld tokens in %.3f s = %.1f tok/s, %.2f GB/s of weights\n"
               "[stats] peak RSS %.1f MB\n",
               info.architecture.c_str(), backend.name().c_str(), cpu::num_threads(), load_seconds,
               static_cast<double>(info.weight_bytes) / 1e6, static_cast<long long>(st.prompt_tokens),
               st.prefill_seconds, st.prefill_tokens_per_second(),
               static_cast<long long>(st.generated_tokens > 0 ? st.generated_tokens - 1 : 0), st.decode_seconds,
               st.decode_tokens_per_second(), gbs, static_cast<double>(app::peak_rss_bytes()) / 1e6);
}

int run(const AskArgs& a) {
  cpu::set_num_threads(a.threads);
  LoadOptions load = a.load;
  load.backend = &backend_for_device(a.device);  // throws saying what is missing for cuda
  std::optional<app::OpProfile> op_profile;      // outlives the model, which calls it
  if (a.profile) load.backend = &op_profile.emplace(*load.backend);
  const bool random = !a.random_config.empty();
  if (random && a.prompt_ids.empty()) throw std::runtime_error("--random-weights needs --prompt-ids");
  const std::string dir = random ? std::string()
                          : a.model == "auto" ? auto_model(a.ctx ? a.ctx : 2048)
                                              : app::resolve_model(a.model).dir;

  // The tokenizer is only optional when ids go in and come out.
  std::optional<Tokenizer> tokenizer;
  if (!(a.print_ids && !a.prompt_ids.empty()) && !random) tokenizer = Tokenizer::load(dir);

  const auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<Model> model =
      random ? random_model(read_json_file(a.random_config), load) : load_model(dir, load);
  const double load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const ModelInfo& info = model->info();

  std::optional<chat::Template> tmpl;
  const std::vector<int32_t> prompt = a.prompt_ids.empty() ? encode_prompt(a, dir, *tokenizer, tmpl)
                                                           : app::parse_prompt_ids(a.prompt_ids, info.vocab_size);
  if (prompt.empty()) throw std::runtime_error("the prompt encodes to no tokens");
  for (int32_t id : prompt)
    if (id >= info.vocab_size)
      throw std::runtime_error("token id " + std::to_string(id) + " from the tokenizer is outside the model's vocabulary of " +
                               std::to_string(info.vocab_size));

  const int64_t wanted = static_cast<int64_t>(prompt.size()) + a.n_predict;
  Cache cache = model->make_cache(a.ctx ? a.ctx : std::min(wanted, info.max_context));
  Sampler sampler(a.sampling);
  GenerateOptions gen;
  gen.max_new_tokens = a.n_predict;
  gen.stop_at_eos = !a.ignore_eos;

  std::optional<StreamDecoder> stream;
  if (!a.print_ids && tokenizer) {
    // Echo the prompt through the same decoder so spacing matches the continuation; a chat
    // model's formatted prompt is not echoed, only its reply printed.
    stream.emplace(*tokenizer);
    for (int32_t id : prompt)
      if (!tmpl && !tokenizer->is_special(id)) std::fputs(stream->push(id).c_str(), stdout);
    std::fflush(stdout);
  }
  const std::vector<int32_t> stops = tmpl ? chat::stop_ids(*tmpl, *tokenizer) : std::vector<int32_t>{};
  TraceRecorder recorder(a.trace_attn);
  if (!a.trace_file.empty()) model->set_tracer(&recorder);
  DecodeProfiler profiler;
  auto on_token = [&](int32_t id) {
    if (!a.trace_file.empty()) model->set_tracer(nullptr);  // trace the prompt's pass only
    // --profile: decode steps only, so from the first token on.
    if (a.profile) {
      model->set_tracer(&profiler);
      op_profile->start();
    }
    if (!a.ignore_eos && std::find(stops.begin(), stops.end(), id) != stops.end()) return false;  // end of turn
    if (stream && !tokenizer->is_special(id)) {
      std::fputs(stream->push(id).c_str(), stdout);
      std::fflush(stdout);
    }
    return true;
  };
  GenerationStats st;
  const std::vector<int32_t> out = generate(*model, cache, prompt, gen, sampler, on_token, &st);
  model->set_tracer(nullptr);
  if (!a.trace_file.empty()) {
    recorder.write(a.trace_file, prompt, {{"model", dir}, {"architecture", info.architecture},
                                          {"n_layers", std::to_string(info.n_layers)}});
    std::fprintf(stderr, "ask: wrote %zu traced tensors of the prompt to %s\n", recorder.entries().size() + 1,
                 a.trace_file.c_str());
  }

  if (a.print_ids) {
    std::string line;
    for (int32_t id : prompt) line += std::to_string(id) + " ";
    for (int32_t id : out) line += std::to_string(id) + " ";
    if (!line.empty()) line.pop_back();
    std::printf("%s\n", line.c_str());
  } else if (stream) {
    std::printf("%s\n", stream->finish().c_str());
  }
  std::fflush(stdout);
  if (a.stats) print_stats(info, *load.backend, load_seconds, st);
  if (a.profile) {
    profiler.print();
    op_profile->print(profiler.tokens());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_args(argc, argv));
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "ask: error: %s\n", e.what());
    return 1;
  }
}
