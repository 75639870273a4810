// Pre-tokenizers: split normalized text into the words the model sees
// (tokenizer.json "pre_tokenizer").
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/json_util.hpp"

namespace purellm::tok {

// A word: a byte range of Words::text. at_origin: it starts at offset 0 of the input
// (Metaspace's prepend_scheme "first" only prepends there).
struct Span {
  size_t begin, end;
  bool at_origin;
};

struct Words {
  std::string text;
  std::vector<Span> spans;
  bool byte_mapped = false;  // text is spelled in the byte-level alphabet (see byte_level.hpp)
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void apply(Words& words) const = 0;
};

// The chain of pre-tokenizers of one tokenizer. Words handed to the model are always raw UTF-8
// bytes: a ByteLevel step that is last only marks the model as byte-level (the model maps bytes
// itself); an earlier one spells the text in the byte-level alphabet for the steps after it, and
// the chain turns the words back into bytes at the end.
class PreTokenizerChain {
 public:
  PreTokenizerChain() = default;
  // Types: Sequence, ByteLevel, Split, Digits, Metaspace, Punctuation, Whitespace,
  // WhitespaceSplit, BertPreTokenizer, CharDelimiterSplit. Others: TokenizerError naming the type.
  static PreTokenizerChain from_json(const json& spec, const std::string& where);
  // GPT-2's: ByteLevel with its default regex.
  static PreTokenizerChain gpt2(bool add_prefix_space);
  // Qwen2's: Split on its regex (Isolated), then ByteLevel without regex.
  static PreTokenizerChain qwen2();

  // Splits `text` (one segment between added tokens) into words.
  void run(std::string text, bool at_origin, Words& out) const;
  bool byte_level() const { return byte_level_; }

 private:
  void finalize(const std::string& where);
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
  bool byte_level_ = false;
};

}  // namespace purellm::tok
