// Loading tokenizer.json, or vocab.json + merges.txt with tokenizer_config.json, into a
// TokenizerImpl.
#include <filesystem>

#include "tokenizer/json_util.hpp"
#include "tokenizer/tokenizer_impl.hpp"

namespace purellm::tok {

namespace fs = std::filesystem;

namespace {

// tokenizer_config.json (or another file) next to `file`; null JSON when absent.
json read_beside(const std::string& file, const char* name) {
  fs::path p = fs::path(file).parent_path() / name;
  std::error_code ec;
  if (!fs::is_regular_file(p, ec)) return json();
  return read_json(p.string());
}

// tokenizer.json "added_tokens": [{id, content, single_word, lstrip, rstrip, normalized, special}].
std::vector<AddedToken> parse_added_tokens(const json& list, const BpeModel& model, const std::string& where) {
  std::vector<AddedToken> out;
  if (list.is_null()) return out;
  if (!list.is_array()) fail(where, "expected an array");
  for (size_t i = 0; i < list.size(); ++i) {
    std::string iwhere = where + "[" + std::to_string(i) + "]";
    const json& t = list[i];
    AddedToken a;
    a.content = get_string(t, "content", iwhere);
    int64_t id = get_int(t, "id", -1, iwhere);
    if (id < 0 || static_cast<size_t>(id) >= kMaxVocab) fail(iwhere, "id " + std::to_string(id) + " out of range");
    a.special = get_bool(t, "special", false, iwhere);
    a.single_word = get_bool(t, "single_word", false, iwhere);
    a.lstrip = get_bool(t, "lstrip", false, iwhere);
    a.rstrip = get_bool(t, "rstrip", false, iwhere);
    a.normalized = get_bool(t, "normalized", !a.special, iwhere);
    // HF gives a token that is already in the model vocabulary the model's id.
    a.id = model.id_of(a.content).value_or(static_cast<int32_t>(id));
    out.push_back(std::move(a));
  }
  return out;
}

// A token name in tokenizer_config.json: "<s>" or {"content": "<s>", ...}.
std::optional<std::string> config_token_name(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return std::nullopt;
}

// Added tokens of a vocab.json + merges.txt tokenizer, as transformers builds them from
// tokenizer_config.json ("added_tokens_decoder", the special token names) and added_tokens.json.
std::vector<AddedToken> config_added_tokens(const json& config, const json& added_json, const BpeModel& model,
                                            const std::string& where) {
  std::vector<AddedToken> out;
  auto find = [&](const std::string& content) -> AddedToken* {
    for (AddedToken& t : out)
      if (t.content == content) return &t;
    return nullptr;
  };
  if (config.is_object() && config.contains("added_tokens_decoder")) {
    const json& dec = config["added_tokens_decoder"];
    if (!dec.is_object()) fail(where + ": added_tokens_decoder", "expected an object");
    for (auto it = dec.begin(); it != dec.end(); ++it) {
      std::string iwhere = where + ": added_tokens_decoder[\"" + it.key() + "\"]";
      AddedToken a;
      try {
        size_t used = 0;
        long id = std::stol(it.key(), &used);
        if (used != it.key().size() || id < 0 || static_cast<size_t>(id) >= kMaxVocab) throw std::out_of_range("");
        a.id = static_cast<int32_t>(id);
      } catch (const std::exception&) {
        fail(iwhere, "the key is not a valid token id");
      }
      a.content = get_string(it.value(), "content", iwhere);
      a.special = get_bool(it.value(), "special", false, iwhere);
      a.single_word = get_bool(it.value(), "single_word", false, iwhere);
      a.lstrip = get_bool(it.value(), "lstrip", false, iwhere);
      a.rstrip = get_bool(it.value(), "rstrip", false, iwhere);
      a.normalized = get_bool(it.value(), "normalized", !a.special, iwhere);
      out.push_back(std::move(a));
    }
  }
  if (added_json.is_object()) {
    for (auto it = added_json.begin(); it != added_json.end(); ++it) {
      if (!it.value().is_number_integer()) fail(where + ": added_tokens.json[\"" + it.key() + "\"]", "expected an integer id");
      if (find(it.key())) continue;
      AddedToken a;
      a.content = it.key();
      const int64_t id = it.value().get<int64_t>();  // read wide: as int32, 2^32 + 1 would pass as 1
      if (id < 0 || id >= static_cast<int64_t>(kMaxVocab)) fail(where + ": added_tokens.json[\"" + it.key() + "\"]", "id out of range");
      a.id = static_cast<int32_t>(id);
      out.push_back(std::move(a));
    }
  }
  // The named special tokens (bos, eos, unk, pad, ...) are special added tokens.
  std::vector<std::string> names;
  if (config.is_object()) {
    for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"})
      if (config.contains(key))
        if (auto n = config_token_name(config[key])) names.push_back(*n);
    if (config.contains("additional_special_tokens") && config["additional_special_tokens"].is_array())
      for (const json& v : config["additional_special_tokens"])
        if (auto n = config_token_name(v)) names.push_back(*n);
  }
  for (const std::string& n : names) {
    if (AddedToken* t = find(n)) {
      t->special = true;
    } else if (auto id = model.id_of(n)) {
      AddedToken a;
      a.content = n;
      a.id = *id;
      a.special = true;
      a.normalized = false;
      out.push_back(std::move(a));
    }
  }
  return out;
}

}  // namespace

std::shared_ptr<TokenizerImpl> load_tokenizer_json(const std::string& path) {
  json j = read_json(path);
  if (!j.is_object()) fail(path, "expected a JSON object (a tokenizer.json file)");
  auto impl = std::make_shared<TokenizerImpl>();
  impl->source = path;
  const json null_json;
  auto field = [&](const char* key) -> const json& { return j.contains(key) ? j[key] : null_json; };

  const json& model = require(j, "model", path);
  std::string type = model.contains("type") ? get_string(model, "type", path + ": model") : (model.contains("merges") ? "BPE" : "");
  if (type != "BPE") fail(path + ": model", "unsupported model type \"" + type + "\" (only BPE is implemented)");

  impl->normalizer = make_normalizer(field("normalizer"), path + ": normalizer");
  impl->pre_tokenizer = PreTokenizerChain::from_json(field("pre_tokenizer"), path + ": pre_tokenizer");
  impl->model = BpeModel::from_json(model, impl->pre_tokenizer.byte_level(), path + ": model");
  impl->post = post_processor_from_json(field("post_processor"), path + ": post_processor");
  impl->decoder = decoder_from_json(field("decoder"), path + ": decoder");
  impl->no_decoder = field("decoder").is_null();
  auto added = parse_added_tokens(field("added_tokens"), *impl->model, path + ": added_tokens");
  j = json();  // free the DOM before building the tables
  impl->finish_loading(std::move(added), read_beside(path, "tokenizer_config.json"));
  return impl;
}

std::shared_ptr<TokenizerImpl> load_vocab_files(const std::string& vocab_path, const std::string& merges_path) {
  std::string source = vocab_path + " + " + merges_path;
  json vocab_json = read_json(vocab_path);
  if (!vocab_json.is_object()) fail(vocab_path, "expected an object of token -> id");
  if (vocab_json.size() > kMaxVocab)
    fail(vocab_path, std::to_string(vocab_json.size()) + " tokens, more than the limit of " + std::to_string(kMaxVocab));
  std::vector<std::pair<std::string, int32_t>> vocab;
  vocab.reserve(vocab_json.size());
  for (auto it = vocab_json.begin(); it != vocab_json.end(); ++it) {
    if (!it.value().is_number_integer()) fail(vocab_path + ": \"" + it.key() + "\"", "expected an integer id");
    int64_t id = it.value().get<int64_t>();
    if (id < 0 || id >= static_cast<int64_t>(kMaxVocab)) fail(vocab_path + ": \"" + it.key() + "\"", "id " + std::to_string(id) + " out of range");
    vocab.emplace_back(it.key(), static_cast<int32_t>(id));
  }
  vocab_json = json();

  // merges.txt: an optional "#version" first line, then "left right" per line.
  std::string text = read_file(merges_path);
  std::vector<MergeSpec> merges;
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
    if (line.find(' ') == std::string_view::npos)
      fail(merges_path + ": line " + std::to_string(line_no), "expected two tokens separated by a space");
    if (merges.size() >= kMaxMerges) fail(merges_path, "more than the limit of " + std::to_string(kMaxMerges) + " merges");
    merges.push_back({"", "", std::string(line)});
  }

  json config = read_beside(vocab_path, "tokenizer_config.json");
  std::string where = fs::path(vocab_path).parent_path().string();
  std::string cls = config.is_object() && config.contains("tokenizer_class") && config["tokenizer_class"].is_string()
                        ? config["tokenizer_class"].get<std::string>() : "";
  bool qwen2 = cls.starts_with("Qwen2Tokenizer");
  bool add_prefix_space = config.is_object() ? get_bool(config, "add_prefix_space", false, "tokenizer_config.json") : false;

  auto impl = std::make_shared<TokenizerImpl>();
  impl->source = source;
  if (qwen2) impl->normalizer = make_normalizer(json{{"type", "NFC"}}, source);
  impl->pre_tokenizer = qwen2 ? PreTokenizerChain::qwen2() : PreTokenizerChain::gpt2(add_prefix_space);
  impl->model = std::make_unique<BpeModel>(std::move(vocab), std::move(merges), BpeOptions{}, true, source);
  impl->decoder = decoder_from_json(json{{"type", "ByteLevel"}}, source);
  auto added = config_added_tokens(config, read_beside(vocab_path, "added_tokens.json"), *impl->model, where);
  impl->finish_loading(std::move(added), config);
  // Slow GPT-2 / Qwen2 tokenizers add BOS / EOS only when the config asks for it.
  if (config.is_object()) {
    if (get_bool(config, "add_bos_token", false, "tokenizer_config.json") && impl->bos) impl->post.prefix = {*impl->bos};
    if (get_bool(config, "add_eos_token", false, "tokenizer_config.json") && impl->eos) impl->post.suffix = {*impl->eos};
  }
  return impl;
}

void TokenizerImpl::finish_loading(std::vector<AddedToken> added_tokens, const json& config) {
  vocab_size = model->size();
  for (const AddedToken& t : added_tokens) vocab_size = std::max(vocab_size, t.id + 1);
  id_to_token = model->tokens();
  id_to_token.resize(static_cast<size_t>(vocab_size));
  has_token.assign(static_cast<size_t>(vocab_size), false);
  for (int32_t id = 0; id < model->size(); ++id) has_token[id] = model->id_of(id_to_token[id]) == id;
  special.assign(static_cast<size_t>(vocab_size), false);
  for (const AddedToken& t : added_tokens) {
    id_to_token[t.id] = t.content;
    has_token[t.id] = true;
    special[t.id] = special[t.id] || t.special;
    added_ids[t.content] = t.id;
  }
  added.build(std::move(added_tokens), normalizer.get());
  for (int32_t id : post.prefix)
    if (id < 0 || id >= vocab_size) fail(source + ": post_processor", "adds id " + std::to_string(id) + ", outside the vocabulary");
  for (int32_t id : post.suffix)
    if (id < 0 || id >= vocab_size) fail(source + ": post_processor", "adds id " + std::to_string(id) + ", outside the vocabulary");

  // bos / eos: tokenizer_config.json (a null there means "none"), else the post-processor
  // template, else a special token with a usual name.
  auto from_config = [&](const char* key) -> std::optional<std::optional<int32_t>> {
    if (!config.is_object() || !config.contains(key)) return std::nullopt;
    auto name = config_token_name(config[key]);
    return name ? token_id(*name) : std::nullopt;
  };
  auto by_name = [&](std::initializer_list<const char*> names) -> std::optional<int32_t> {
    for (const char* n : names) {
      auto id = token_id(n);
      if (id && special[*id]) return id;
    }
    return std::nullopt;
  };
  if (auto c = from_config("bos_token")) bos = *c;
  else bos = post.bos() ? post.bos() : by_name({"<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>", "<|endoftext|>"});
  if (auto c = from_config("eos_token")) eos = *c;
  else eos = post.eos() ? post.eos() : by_name({"</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>"});
}

}  // namespace purellm::tok
