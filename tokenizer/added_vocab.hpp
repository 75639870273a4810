// Added tokens (special tokens, chat markers, extra words) that are cut out of the text before
// the model sees it, as HF AddedVocabulary::extract_and_normalize does.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace purellm::tok {

class Normalizer;

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool single_word = false;  // only match when not inside a word
  bool lstrip = false;       // swallow the whitespace on its left
  bool rstrip = false;       // swallow the whitespace on its right
  bool normalized = true;    // match against the normalized text (else the raw text)
  bool special = false;
};

// A piece of text: either an added token (id >= 0) or text between added tokens (id < 0).
struct Segment {
  size_t begin, end;
  int32_t id;
};

class AddedVocab {
 public:
  // tokens in tokenizer.json order; `normalizer` (may be null) spells the patterns of
  // "normalized" tokens.
  void build(std::vector<AddedToken> tokens, const Normalizer* normalizer);

  // Cuts the tokens of one kind out of text: normalized == false -> the raw-text tokens,
  // true -> the normalized-text tokens. Segments cover text in order; empty text gives nothing.
  void split(std::string_view text, bool normalized, std::vector<Segment>& out) const;

  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  // One matcher per kind: patterns grouped by first byte, longest first (leftmost-longest).
  struct Matcher {
    std::vector<std::string> patterns;
    std::vector<size_t> token_index;               // patterns[i] belongs to tokens_[token_index[i]]
    std::array<std::vector<uint32_t>, 256> by_first;  // pattern indices, longest first
    bool empty() const { return patterns.empty(); }
  };
  void add_pattern(Matcher& m, std::string pattern, size_t token);
  void find(const Matcher& m, std::string_view text, std::vector<Segment>& out) const;

  std::vector<AddedToken> tokens_;
  Matcher raw_, normalized_;
};

}  // namespace purellm::tok
