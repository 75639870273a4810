// GPT-2's byte <-> character map (bytes_to_unicode in openai/gpt-2 encoder.py).
//
// Byte-level BPE vocabularies spell every byte as one printable character: the 188 printable
// bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves, the other 68 bytes map to
// U+0100.. in byte order (so ' ' is 'Ġ' U+0120 and '\n' is 'Ċ' U+010A).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace purellm::tok {

struct ByteLevelMap {
  std::array<char32_t, 256> byte_to_char;
  std::array<std::string, 256> byte_to_utf8;  // byte_to_char encoded, for building strings

  // The byte a character stands for, or nullopt for a character outside the 256.
  std::optional<uint8_t> char_to_byte(char32_t c) const {
    if (c < 0x100) return byte_to_char[c] == c ? std::optional<uint8_t>(static_cast<uint8_t>(c)) : std::nullopt;
    if (c < 0x100 + 68) return unprintable_[c - 0x100];
    return std::nullopt;
  }

  static const ByteLevelMap& get();

 private:
  ByteLevelMap();
  std::array<uint8_t, 68> unprintable_{};  // U+0100 + i stands for byte unprintable_[i]
};

// The byte-level spelling of raw bytes ("a b" -> "aĠb").
std::string bytes_to_byte_level(std::string_view raw);
// The raw bytes a byte-level string spells, or nullopt if it has a character outside the map.
std::optional<std::string> byte_level_to_bytes(std::string_view text);

}  // namespace purellm::tok
