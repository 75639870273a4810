#include "tokenizer/utf8.hpp"

namespace purellm::tok {

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Table 3-7 of the Unicode standard: the well-formed byte sequences. A lead byte fixes the
// sequence length and the range of the first continuation byte; later ones are 80..BF.
void Utf8Repairer::start(unsigned char b, std::string& out) {
  lo_ = 0x80;
  hi_ = 0xBF;
  if (b < 0x80) {
    out += static_cast<char>(b);
    return;
  }
  if (b >= 0xC2 && b <= 0xDF) {
    need_ = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need_ = 3;
    if (b == 0xE0) lo_ = 0xA0;
    if (b == 0xED) hi_ = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    need_ = 4;
    if (b == 0xF0) lo_ = 0x90;
    if (b == 0xF4) hi_ = 0x8F;
  } else {
    out += kReplacementChar;  // 80..C1, F5..FF never start a character
    return;
  }
  pending_[0] = static_cast<char>(b);
  have_ = 1;
}

void Utf8Repairer::push(unsigned char b, std::string& out) {
  if (have_ == 0) {
    start(b, out);
    return;
  }
  if (b < lo_ || b > hi_) {
    // The bytes so far are a maximal subpart: one U+FFFD, then b starts afresh.
    out += kReplacementChar;
    have_ = 0;
    start(b, out);
    return;
  }
  pending_[have_++] = static_cast<char>(b);
  lo_ = 0x80;
  hi_ = 0xBF;
  if (have_ == need_) {
    out.append(pending_, have_);
    have_ = 0;
  }
}

void Utf8Repairer::finish(std::string& out) {
  if (have_ > 0) out += kReplacementChar;
  have_ = 0;
}

bool is_valid_utf8(std::string_view s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    // Skip ASCII eight bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      __builtin_memcpy(&w, s.data() + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      ++i;
      continue;
    }
    int need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
      need = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
      need = 3;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      need = 4;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (i + need > n) return false;
    for (int k = 1; k < need; ++k) {
      auto c = static_cast<unsigned char>(s[i + k]);
      if (c < lo || c > hi) return false;
      lo = 0x80;
      hi = 0xBF;
    }
    i += need;
  }
  return true;
}

std::string repair_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  Utf8Repairer r;
  for (char c : s) r.push(static_cast<unsigned char>(c), out);
  r.finish(out);
  return out;
}

}  // namespace purellm::tok
