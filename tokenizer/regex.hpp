// PCRE2 regexes (UTF + UCP, JIT) for the patterns tokenizer.json files carry.
//
// HF tokenizers runs these patterns with Oniguruma; the Python tokenizers behind the goldens use
// the `regex` module. Both read \s as the Unicode White_Space property, while PCRE2's \s with
// UCP also matches U+180E. translate_pattern() therefore rewrites \s / \S to
// \p{White_Space} / \P{White_Space}, and \w / \d to the Oniguruma classes (letters, marks,
// decimal digits, connector punctuation / decimal digits). Patterns compile with MULTILINE, as
// Oniguruma's default (Ruby) syntax lets ^ and $ match at line ends.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace purellm::tok {

struct Match {
  size_t begin, end;  // byte offsets into the searched text
};

std::string translate_pattern(std::string_view pattern);

class Regex {
 public:
  // Compiles translate_pattern(pattern). `where` names the pattern's origin in errors
  // ("tokenizer.json: pre_tokenizer.pretokenizers[0].pattern").
  Regex(std::string_view pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends every non-overlapping match of valid UTF-8 `text`, left to right. After an empty
  // match the search resumes one character later (as Oniguruma's find_iter does).
  void find_all(std::string_view text, std::vector<Match>& out) const;

 private:
  struct Code;
  std::unique_ptr<Code> code_;
  std::string where_;
};

}  // namespace purellm::tok
