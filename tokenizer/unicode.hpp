// Unicode character classes and normalization forms, all from utf8proc (no hand-made tables).
// Each predicate names the Rust function HF tokenizers calls, whose meaning it reproduces.
#pragma once

#include <string>
#include <string_view>

namespace purellm::tok {

// Rust char::is_whitespace: the White_Space property (= categories Zs, Zl, Zp plus
// U+0009..U+000D and U+0085).
bool is_whitespace(char32_t c);
// Rust char::is_numeric: categories Nd, Nl, No.
bool is_numeric(char32_t c);
// HF's is_punc: char::is_ascii_punctuation or a Unicode punctuation category (Pc Pd Ps Pe Pi Pf Po).
bool is_punctuation(char32_t c);
// A regex \w character: letters, marks, decimal digits, connector punctuation (and Nl).
bool is_word_char(char32_t c);
// Unicode combining mark of category Mn (what StripAccents removes after NFD).
bool is_nonspacing_mark(char32_t c);

enum class NormalForm { NFC, NFD, NFKC, NFKD };
// s (valid UTF-8) in the given normalization form.
std::string normalize(std::string_view s, NormalForm form);
// Rust str::to_lowercase per character (full mapping: U+0130 becomes "i\u0307").
std::string lowercase(std::string_view s);

}  // namespace purellm::tok
