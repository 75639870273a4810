// UTF-8 walking, encoding and repair.
//
// Repair follows the Unicode "maximal subpart" practice (Unicode 15, section 3.9, table 3-8):
// each maximal invalid subsequence becomes one U+FFFD. That is what CPython's
// bytes.decode("utf-8", errors="replace") and Rust's String::from_utf8_lossy produce, so byte
// sequences decode here exactly as HF transformers / tokenizers decode them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace purellm::tok {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// Appends the UTF-8 encoding of code point cp (cp < 0x110000).
void append_utf8(std::string& out, char32_t cp);

// Decodes the code point starting at s[i] of valid UTF-8 and advances i past it.
inline char32_t next_char(std::string_view s, size_t& i) {
  auto b = static_cast<unsigned char>(s[i]);
  if (b < 0x80) {
    ++i;
    return b;
  }
  int n = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
  char32_t cp = b & (0x7F >> n);
  for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += n;
  return cp;
}

// Byte length of the character whose lead byte is b (valid UTF-8 assumed).
inline int char_len(unsigned char b) { return b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2; }

bool is_valid_utf8(std::string_view s);

// s with every maximal invalid subsequence replaced by U+FFFD.
std::string repair_utf8(std::string_view s);

// Incremental UTF-8 decoder with the same replacement rule: bytes go in one at a time,
// complete characters (or U+FFFD for invalid input) come out. A character split across
// push() calls is held until it is complete; finish() turns a truncated tail into U+FFFD.
class Utf8Repairer {
 public:
  void push(unsigned char b, std::string& out);
  void finish(std::string& out);

 private:
  void start(unsigned char b, std::string& out);
  char pending_[4] = {};
  int have_ = 0;        // bytes of the current character seen so far
  int need_ = 0;        // total bytes of the current character
  unsigned char lo_ = 0x80, hi_ = 0xBF;  // allowed range of the next continuation byte
};

}  // namespace purellm::tok
