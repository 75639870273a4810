// Invariants every loaded tokenizer must keep, shared by the tokenizer fuzz targets.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.hpp"
#include "tokenizer/tokenizer.hpp"
#include "tokenizer/utf8.hpp"

namespace purellm::fuzz {

// decode(ids) is valid UTF-8, and a StreamDecoder fed the same ids one by one gives the same
// text in pieces that are each valid UTF-8. ids must be in [0, vocab_size).
inline std::string check_decode(const Tokenizer& tok, std::span<const int32_t> ids) {
  const std::string text = tok.decode(ids);
  FUZZ_CHECK(tok::is_valid_utf8(text));
  StreamDecoder stream(tok);
  std::string streamed;
  for (int32_t id : ids) {
    const std::string piece = stream.push(id);
    FUZZ_CHECK(tok::is_valid_utf8(piece));
    streamed += piece;
  }
  streamed += stream.finish();
  FUZZ_CHECK(streamed == text);
  return text;
}

// encode(text) gives ids inside the vocabulary, which decode cleanly.
inline std::vector<int32_t> check_encode(const Tokenizer& tok, std::string_view text, bool add_special) {
  std::vector<int32_t> ids = tok.encode(text, add_special);
  for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < tok.vocab_size());
  check_decode(tok, ids);
  return ids;
}

// A freshly loaded tokenizer (from fuzzed files): fixed texts of every kind encode and decode,
// and the first ids decode one by one.
inline void exercise(const Tokenizer& tok) {
  static const char* const kTexts[] = {
      "", "Hello world", " leading  and trailing  ", "123 4567 89", "caf\xc3\xa9 na\xc3\xafve \xe4\xbd\xa0\xe5\xa5\xbd",
      "emoji \xf0\x9f\x98\x80!", "tabs\tand\nnewlines\r\n", "<s> </s> <|endoftext|> <unk>", "\xff\xfe invalid \xc3",
      "a\xcc\x81 decomposed"};
  for (const char* text : kTexts) {
    check_encode(tok, text, false);
    check_encode(tok, text, true);
  }
  const int32_t n = std::min(tok.vocab_size(), 300);
  for (int32_t id = 0; id < n; ++id) {
    const int32_t one[] = {id};
    check_decode(tok, one);
    (void)tok.token_text(id);
    (void)tok.is_special(id);
  }
  for (auto id : {tok.bos_id(), tok.eos_id()}) FUZZ_CHECK(!id || (*id >= 0 && *id < tok.vocab_size()));
}

}  // namespace purellm::fuzz
