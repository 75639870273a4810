// Fuzz target: loading a tokenizer.json (every component: model, normalizer, pre-tokenizer
// with its regex, decoder, post-processor, added tokens). The input is written as
// tokenizer.json in a scratch folder and loaded with Tokenizer::load; a tokenizer that loads
// then has to encode and decode fixed texts cleanly (fuzz/tokenizer_checks.hpp).
#include <optional>

#include "fuzz/tokenizer_checks.hpp"

using namespace purellm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = fuzz::scratch_dir() + "/tokenizer.json";
  fuzz::write_file(path, fuzz::as_text(data, size));
  std::optional<Tokenizer> tok;
  try {
    tok = Tokenizer::load(path);
  } catch (const TokenizerError&) {
    return 0;
  }
  fuzz::exercise(*tok);  // outside the try: a loaded tokenizer must not throw on any text
  return 0;
}
