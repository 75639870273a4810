#include "tokenizer/byte_level.hpp"

#include "tokenizer/utf8.hpp"

namespace purellm::tok {

ByteLevelMap::ByteLevelMap() {
  int next = 0;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    if (printable) {
      byte_to_char[b] = static_cast<char32_t>(b);
    } else {
      byte_to_char[b] = static_cast<char32_t>(0x100 + next);
      unprintable_[next++] = static_cast<uint8_t>(b);
    }
    append_utf8(byte_to_utf8[b], byte_to_char[b]);
  }
}

const ByteLevelMap& ByteLevelMap::get() {
  static const ByteLevelMap map;
  return map;
}

std::string bytes_to_byte_level(std::string_view raw) {
  const ByteLevelMap& m = ByteLevelMap::get();
  std::string out;
  out.reserve(raw.size() * 2);
  for (char c : raw) out += m.byte_to_utf8[static_cast<uint8_t>(c)];
  return out;
}

std::optional<std::string> byte_level_to_bytes(std::string_view text) {
  const ByteLevelMap& m = ByteLevelMap::get();
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    auto b = m.char_to_byte(next_char(text, i));
    if (!b) return std::nullopt;
    out += static_cast<char>(*b);
  }
  return out;
}

}  // namespace purellm::tok
