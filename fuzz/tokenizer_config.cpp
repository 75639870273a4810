// Fuzz target: the files read beside a tokenizer: tokenizer_config.json (bos/eos names,
// added_tokens_decoder, add_bos_token, tokenizer_class, ...) and added_tokens.json. The first
// input byte picks the setting, the rest is the file:
//   0: tokenizer_config.json beside a small tokenizer.json
//   1: tokenizer_config.json beside a small vocab.json + merges.txt
//   2: added_tokens.json beside the same vocab.json + merges.txt
#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>

#include "fuzz/tokenizer_checks.hpp"

using namespace purellm;
using nlohmann::json;

namespace {

// A byte-level BPE over "a", "b", "c", "Ġ" with merges a b -> ab, ab c -> abc, and <s> </s>.
const json kVocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"\u0120", 3}, {"ab", 4}, {"abc", 5}, {"<s>", 6}, {"</s>", 7}};

struct Folders {
  std::string json_dir, vocab_dir;
  Folders() {
    namespace fs = std::filesystem;
    json_dir = fuzz::scratch_dir() + "/with_json";
    vocab_dir = fuzz::scratch_dir() + "/with_vocab";
    fs::create_directories(json_dir);
    fs::create_directories(vocab_dir);
    const json tokenizer = {
        {"model", {{"type", "BPE"}, {"vocab", kVocab}, {"merges", {"a b", "ab c"}}}},
        {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
        {"decoder", {{"type", "ByteLevel"}}},
        {"added_tokens", {{{"id", 6}, {"content", "<s>"}, {"special", true}},
                          {{"id", 7}, {"content", "</s>"}, {"special", true}}}}};
    fuzz::write_file(json_dir + "/tokenizer.json", tokenizer.dump());
    fuzz::write_file(vocab_dir + "/vocab.json", kVocab.dump());
    fuzz::write_file(vocab_dir + "/merges.txt", "#version: 0.2\na b\nab c\n");
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Folders folders;
  if (size == 0) return 0;
  const int setting = data[0] % 3;
  const std::string_view file = fuzz::as_text(data + 1, size - 1);
  const std::string& dir = setting == 0 ? folders.json_dir : folders.vocab_dir;
  std::filesystem::remove(folders.vocab_dir + "/tokenizer_config.json");
  std::filesystem::remove(folders.vocab_dir + "/added_tokens.json");
  fuzz::write_file(dir + (setting == 2 ? "/added_tokens.json" : "/tokenizer_config.json"), file);
  std::optional<Tokenizer> tok;
  try {
    tok = Tokenizer::load(dir);
  } catch (const TokenizerError&) {
    return 0;
  }
  fuzz::exercise(*tok);
  return 0;
}
