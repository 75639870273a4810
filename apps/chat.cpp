// chat: talk to a model turn by turn. The KV cache lives for the whole conversation, so each
// turn feeds only its own new tokens (the history is never prefilled again).
//
//   chat -m DIR|ALIAS [--template NAME] [--system TEXT] [options]
//   > your message         (one line per turn)
//   /reset  forget the conversation      /stats  speed and cache use      Ctrl-D  quit
//
// The prompt format comes from the model's chat_template (tokenizer_config.json), recognised
// as one of the built-in formats (apps/chat_template.hpp); --template overrides it.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "apps/app_common.hpp"
#include "apps/chat_template.hpp"
#include "models/generate.hpp"
#include "tensor/cpu/cpu_backend.hpp"
#include "tokenizer/tokenizer.hpp"

using namespace purellm;

namespace {

const char* kUsage = R"(usage: chat -m DIR|ALIAS [options]

  -m, --model DIR|ALIAS   model folder, or an alias from models.json
      --template NAME     prompt format: raw, chatml, llama2, llama3, zephyr, granite, dialogpt
                          (default: recognised from the model's chat_template)
      --system TEXT       a system message opening the conversation
  -n, --n-predict N       most tokens per reply (default 256)
  -c, --ctx N             positions the conversation may use (default: the model's, at most 4096)
      --greedy            always take the most likely token
      --temp T, --top-k K, --top-p P, --repeat-penalty R, --seed S   sampling, as in ask
  -t, --threads N         worker threads
      --mmap, --dtype D, --kv-dtype D
                          as in ask
      --stats             print the turn's statistics after each reply
      --print-ids         print each turn's fed and generated token ids to stderr
  -h, --help              this text

In the conversation: /reset forgets it, /stats shows the last turn, Ctrl-D (end of input) quits.
)";

struct ChatArgs {
  std::string model;
  std::string template_name;
  std::optional<std::string> system;
  int64_t n_predict = 256;
  int64_t ctx = 0;
  SamplingOptions sampling;
  int threads = 0;
  LoadOptions load;
  bool stats = false, print_ids = false;
};

ChatArgs parse_args(int argc, char** argv) {
  ChatArgs a;
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
    else if (f == "--template") a.template_name = value(i);
    else if (f == "--system") a.system = value(i);
    else if (f == "-n" || f == "--n-predict") a.n_predict = app::parse_int(f, value(i), 1, 1 << 24);
    else if (f == "-c" || f == "--ctx") a.ctx = app::parse_int(f, value(i), 1, 1 << 24);
    else if (f == "--greedy") a.sampling.greedy = true;
    else if (f == "--temp") a.sampling.temperature = static_cast<float>(app::parse_float(f, value(i), 0.0, 100.0));
    else if (f == "--top-k") a.sampling.top_k = static_cast<int>(app::parse_int(f, value(i), 0, 1 << 30));
    else if (f == "--top-p") a.sampling.top_p = static_cast<float>(app::parse_float(f, value(i), 1e-6, 1.0));
    else if (f == "--repeat-penalty") a.sampling.repetition_penalty = static_cast<float>(app::parse_float(f, value(i), 1e-3, 100.0));
    else if (f == "--seed") a.sampling.seed = static_cast<uint64_t>(app::parse_int(f, value(i), 0, INT64_MAX));
    else if (f == "-t" || f == "--threads") a.threads = static_cast<int>(app::parse_int(f, value(i), 1, 1024));
    else if (f == "--mmap") a.load.mode = LoadMode::Mmap;
    else if (f == "--dtype") a.load.weight_dtype = app::parse_weight_dtype(value(i));
    else if (f == "--kv-dtype") a.load.kv_dtype = app::parse_kv_dtype(value(i));
    else if (f == "--stats") a.stats = true;
    else if (f == "--print-ids") a.print_ids = true;
    else throw std::runtime_error("unknown option " + f + " (see --help)");
  }
  if (a.model.empty()) throw std::runtime_error("no model given: chat -m DIR|ALIAS (see --help)");
  return a;
}

// Raised when a turn does not fit in what is left of the context; the conversation is intact.
class ContextFull : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct TurnStats {
  int turn = 0;
  int64_t fed = 0;  // tokens this turn put into the cache before generating (its prefill)
  GenerationStats gen;
};

std::string strip(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\n\r\v\f");
  return a == std::string::npos ? "" : s.substr(a, s.find_last_not_of(" \t\n\r\v\f") - a + 1);
}

class ChatSession {
 public:
  ChatSession(Model& model, const Tokenizer& tokenizer, chat::Template tmpl, int64_t ctx,
              std::optional<std::string> system, const SamplingOptions& sampling)
      : model_(model), tok_(tokenizer), tmpl_(std::move(tmpl)), system_(std::move(system)),
        cache_(model.make_cache(ctx)), sampler_(sampling) {
    stop_ = chat::stop_ids(tmpl_, tok_);
    stop_.insert(stop_.end(), model.info().eos_ids.begin(), model.info().eos_ids.end());
    reset();
  }

  void reset() {
    cache_.reset();
    history_.clear();
    if (system_) history_.push_back({"system", *system_});
    unfed_.reset();
    reply_start_ = 0;
  }

  // One user turn: feeds what the cache lacks, streams the reply through `print`.
  TurnStats turn(const std::string& user, int64_t max_new, const std::function<void(const std::string&)>& print,
                 std::vector<int32_t>* fed_ids, std::vector<int32_t>* generated_ids) {
    std::vector<chat::Message> messages = history_;
    messages.push_back({"user", user});
    const std::string full = tmpl_.render(messages, /*add_generation_prompt=*/true);
    const std::vector<int32_t> feed = new_tokens(full);
    const int64_t room = cache_.max_seq() - cache_.n_past();
    if (static_cast<int64_t>(feed.size()) > room)
      throw ContextFull("context full: " + std::to_string(cache_.n_past()) + " of " + std::to_string(cache_.max_seq()) +
                        " positions used and this turn needs " + std::to_string(feed.size()) +
                        " more. /reset starts a new conversation");

    StreamDecoder stream(tok_);
    GenerateOptions opt;
    opt.max_new_tokens = std::min<int64_t>(max_new, room - static_cast<int64_t>(feed.size()) + 1);
    auto on_token = [&](int32_t id) {
      if (is_stop(id)) return false;
      if (!tok_.is_special(id)) print(stream.push(id));
      return true;
    };
    TurnStats st;
    st.fed = static_cast<int64_t>(feed.size());
    const std::vector<int32_t> out = generate(model_, cache_, feed, opt, sampler_, on_token, &st.gen);
    print(stream.finish());

    // The last id is never fed back: a stop token is replaced by the template's own closing
    // text next turn; any other token is fed first then.
    const bool stopped = !out.empty() && is_stop(out.back());
    const std::vector<int32_t> content(out.begin(), out.end() - (stopped ? 1 : 0));
    unfed_ = stopped || out.empty() ? std::nullopt : std::optional<int32_t>(out.back());
    history_.push_back({"user", user});
    history_.push_back({"assistant", tok_.decode(content)});
    reply_start_ = full.size();
    if (fed_ids) *fed_ids = feed;
    if (generated_ids) *generated_ids = out;
    return st;
  }

  const Cache& cache() const { return cache_; }
  // Whether the reply just given ran out of context before its end.
  bool full() const { return cache_.n_past() + (unfed_ ? 1 : 0) >= cache_.max_seq(); }

 private:
  bool is_stop(int32_t id) const { return std::find(stop_.begin(), stop_.end(), id) != stop_.end(); }

  // The tokens that bring the cache from where the last reply stopped to `full` (the whole
  // conversation rendered with the new user turn and the assistant's opening).
  std::vector<int32_t> new_tokens(const std::string& full) {
    if (cache_.n_past() == 0) return tok_.encode(full, tmpl_.add_special());
    const std::string prev = tmpl_.render(history_, /*add_generation_prompt=*/false);
    if (full.compare(0, prev.size(), prev) != 0)
      throw std::runtime_error("the " + std::string(tmpl_.name()) + " format does not extend the conversation; /reset");
    // The cache ends inside the last reply's content; what the template puts after that
    // content (its closing, e.g. "<|im_end|>\n") comes before the new turn.
    const std::string content = strip(history_.back().content);
    size_t end = prev.find(content, reply_start_);
    end = end == std::string::npos ? reply_start_ : end + content.size();
    std::vector<int32_t> feed;
    if (unfed_) feed.push_back(*unfed_);
    const std::vector<int32_t> rest = tok_.encode(prev.substr(std::min(end, prev.size())) + full.substr(prev.size()), false);
    feed.insert(feed.end(), rest.begin(), rest.end());
    return feed;
  }

  Model& model_;
  const Tokenizer& tok_;
  chat::Template tmpl_;
  std::optional<std::string> system_;
  Cache cache_;
  Sampler sampler_;
  std::vector<int32_t> stop_;
  std::vector<chat::Message> history_;
  std::optional<int32_t> unfed_;  // the last generated token, not in the cache yet
  size_t reply_start_ = 0;        // where the last reply's content starts in the rendered text
};

void print_stats(const TurnStats& st, const Cache& cache) {
  std::fprintf(stderr,
               "[stats] turn %d: fed %lld tokens in %.3f s (prefill), generated %lld tokens at %.1f tok/s; "
               "cache %lld of %lld positions\n",
               st.turn, static_cast<long long>(st.fed), st.gen.prefill_seconds,
               static_cast<long long>(st.gen.generated_tokens), st.gen.decode_tokens_per_second(),
               static_cast<long long>(cache.n_past()), static_cast<long long>(cache.max_seq()));
}

std::string join(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) {
    if (!s.empty()) s += ' ';
    s += std::to_string(id);
  }
  return s;
}

int run(const ChatArgs& a) {
  cpu::set_num_threads(a.threads);
  const app::ResolvedModel resolved = app::resolve_model(a.model);
  const std::optional<chat::Template> tmpl = chat::template_for(resolved.dir, a.template_name);
  if (!tmpl)
    throw std::runtime_error(resolved.dir + " has no chat_template (a base model?). Choose a format with --template NAME (" +
                             chat::format_names() + "); raw simply continues the text");
  const Tokenizer tokenizer = Tokenizer::load(resolved.dir);
  std::unique_ptr<Model> model = load_model(resolved.dir, a.load);
  const int64_t ctx = std::min(a.ctx ? a.ctx : int64_t{4096}, model->info().max_context);
  ChatSession session(*model, tokenizer, *tmpl, ctx, a.system, a.sampling);

  const bool interactive = isatty(STDIN_FILENO);
  if (interactive)
    std::fprintf(stderr, "chat with %s (%s format, %lld positions). /reset, /stats, Ctrl-D to quit.\n",
                 resolved.dir.c_str(), std::string(tmpl->name()).c_str(), static_cast<long long>(ctx));
  std::optional<TurnStats> last;
  int turns = 0;
  std::string line;
  while (true) {
    if (interactive) std::fputs("> ", stdout), std::fflush(stdout);
    if (!std::getline(std::cin, line)) break;
    if (line.empty()) continue;
    if (line == "/quit" || line == "/exit") break;
    if (line == "/reset") {
      session.reset();
      std::fprintf(stderr, "[conversation reset]\n");
      continue;
    }
    if (line == "/stats") {
      if (last) print_stats(*last, session.cache());
      else std::fprintf(stderr, "[stats] no turn yet; cache %lld of %lld positions\n",
                        static_cast<long long>(session.cache().n_past()), static_cast<long long>(session.cache().max_seq()));
      continue;
    }
    if (line == "/help") {
      std::fprintf(stderr, "/reset forgets the conversation, /stats shows the last turn, Ctrl-D quits\n");
      continue;
    }
    try {
      std::vector<int32_t> fed, generated;
      TurnStats st = session.turn(line, a.n_predict, [](const std::string& s) { std::fputs(s.c_str(), stdout); std::fflush(stdout); },
                                  &fed, &generated);
      st.turn = ++turns;
      std::fputs("\n", stdout);
      std::fflush(stdout);
      if (a.print_ids) std::fprintf(stderr, "[ids] fed %s | generated %s\n", join(fed).c_str(), join(generated).c_str());
      if (a.stats) print_stats(st, session.cache());
      if (session.full()) std::fprintf(stderr, "[the context is full: /reset starts a new conversation]\n");
      last = st;
    } catch (const ContextFull& e) {
      std::fprintf(stderr, "[%s]\n", e.what());
    }
  }
  if (interactive) std::fputs("\n", stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_args(argc, argv));
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "chat: error: %s\n", e.what());
    return 1;
  }
}
