// Normalizers: text -> text before pre-tokenization (tokenizer.json "normalizer").
#pragma once

#include <memory>
#include <string>

#include "tokenizer/json_util.hpp"

namespace purellm::tok {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void apply(std::string& text) const = 0;
};

// Builds the normalizer described by `spec` (null -> nullptr). Types: Sequence, NFC, NFD,
// NFKC, NFKD, Lowercase, Prepend, Append, Replace, Strip, StripAccents. Any other type is a
// TokenizerError naming it.
std::unique_ptr<Normalizer> make_normalizer(const json& spec, const std::string& where);

}  // namespace purellm::tok
