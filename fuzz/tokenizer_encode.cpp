// Fuzz target: encode arbitrary bytes (invalid UTF-8 included) with real tokenizers. The first
// input byte picks the tokenizer and whether BOS/EOS are added; the rest is the text.
// Checks: ids inside the vocabulary; decode and the streaming decoder agree and give valid
// UTF-8; for byte-level tokenizers without a normalizer, decode(encode(text)) == text.
#include "fuzz/real_tokenizers.hpp"
#include "fuzz/tokenizer_checks.hpp"

using namespace purellm;

// Loading the five tokenizers takes seconds under ASan: done here, outside the per-input timeout.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::real_tokenizers();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& all = fuzz::real_tokenizers();
  if (size == 0) return 0;
  const fuzz::RealTokenizer& real = all[(data[0] >> 1) % all.size()];
  const bool add_special = data[0] & 1;
  const std::string_view text = fuzz::as_text(data + 1, size - 1);
  const std::vector<int32_t> ids = fuzz::check_encode(real.tok, text, add_special);
  if (real.round_trips && !add_special && tok::is_valid_utf8(text)) FUZZ_CHECK(real.tok.decode(ids) == text);
  return 0;
}
