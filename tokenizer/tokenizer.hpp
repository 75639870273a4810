// purellm's tokenizer: one implementation of Hugging Face tokenizer.json (and of GPT-2 style
// vocab.json + merges.txt), matching HF ids exactly.
//
// encode(text) runs the HF pipeline, in this order:
//   1. added tokens that are not "normalized" are cut out of the raw text (leftmost-longest,
//      honouring lstrip / rstrip / single_word);
//   2. each remaining segment is normalized (NFC, Prepend "▁", Replace " " -> "▁", ...), then
//      "normalized" added tokens are cut out of it;
//   3. pre-tokenizers split it into words (the file's regex, ByteLevel, Digits, Metaspace ...);
//   4. the BPE model turns each word into ids (merges by rank, byte fallback, unk);
//   5. with add_special, the post-processor adds BOS / EOS.
// decode(ids) maps ids to their vocab strings and runs the file's decoder chain
// (ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace), like HF
// decode(skip_special_tokens=False, clean_up_tokenization_spaces=False).
//
// Input that is not valid UTF-8: encode() first replaces each maximal invalid byte sequence by
// U+FFFD (exactly what Python's bytes.decode("utf-8", errors="replace") does) and encodes that,
// i.e. the ids HF gives for the text a Python caller would have after decoding the bytes.
//
// A Tokenizer is immutable after load() (its word cache is internally locked), cheap to copy
// and safe to use from several threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace purellm {

// Every problem with tokenizer files or ids: the message names the file, key or id.
class TokenizerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace tok {
struct TokenizerImpl;
class DecodePipeline;
}  // namespace tok

class Tokenizer {
 public:
  // path: a tokenizer.json file (any name, e.g. tokenizer.reconstructed.json); a folder with
  // tokenizer.json; a folder with vocab.json + merges.txt or encoder.json + vocab.bpe; or the
  // vocab.json / encoder.json file itself (its merges file sits beside it). A
  // tokenizer_config.json beside the files supplies added tokens (vocab files only) and
  // bos/eos.
  static Tokenizer load(const std::string& path);

  // Token ids of text. add_special: let the post-processor add BOS / EOS.
  std::vector<int32_t> encode(std::string_view text, bool add_special = false) const;
  // Text of ids, special tokens included. TokenizerError for an id outside [0, vocab_size()).
  std::string decode(std::span<const int32_t> ids) const;

  // Number of ids: one past the largest id of the vocab and the added tokens.
  int32_t vocab_size() const;
  // Id of a vocab string ("Ġthe", "▁the", "<s>"), added tokens included.
  std::optional<int32_t> token_id(std::string_view token) const;
  // The vocab string of an id ("" for an unused id). TokenizerError when out of range.
  std::string token_text(int32_t id) const;
  // From tokenizer_config.json when it names them, else the post-processor template, else the
  // usual special-token names (<s>, </s>, <|endoftext|>, ...).
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  // True for added tokens marked "special" (BOS, EOS, chat markers ...).
  bool is_special(int32_t id) const;

 private:
  friend class StreamDecoder;
  explicit Tokenizer(std::shared_ptr<const tok::TokenizerImpl> impl);
  std::shared_ptr<const tok::TokenizerImpl> impl_;
};

// Turns ids into text as they are generated. push() returns only complete UTF-8 text, and the
// decoder chain runs exactly as decode() runs it over the whole sequence: the concatenation of
// every push() result and finish() equals decode(all ids). Text is held back only while a later
// id could still change it (an incomplete UTF-8 character, a run of byte-fallback tokens,
// characters a Strip decoder may remove at the end). finish() returns the rest and resets.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer);
  ~StreamDecoder();
  StreamDecoder(StreamDecoder&&) noexcept;
  StreamDecoder& operator=(StreamDecoder&&) noexcept;

  std::string push(int32_t id);
  std::string finish();

 private:
  std::shared_ptr<const tok::TokenizerImpl> impl_;
  std::unique_ptr<tok::DecodePipeline> pipeline_;
};

}  // namespace purellm
