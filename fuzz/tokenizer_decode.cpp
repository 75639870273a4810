// Fuzz target: decode arbitrary ids with real tokenizers, at once and streamed. The first
// input byte picks the tokenizer; each following 3 bytes are one id (little-endian, 24 bits,
// so ids cover every real vocabulary and land past its end too). Ids outside the vocabulary
// must get TokenizerError, the same from decode() and StreamDecoder::push(); the rest decode
// to valid UTF-8, identically at once and streamed.
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
  const Tokenizer& tok = all[data[0] % all.size()].tok;
  std::vector<int32_t> ids;
  bool in_range = true;
  for (size_t i = 1; i + 3 <= size; i += 3) {
    ids.push_back(int32_t(data[i] | data[i + 1] << 8 | data[i + 2] << 16));
    in_range = in_range && ids.back() < tok.vocab_size();
  }
  if (in_range) {
    fuzz::check_decode(tok, ids);
    return 0;
  }
  bool decode_refused = false, stream_refused = false;
  try {
    tok.decode(ids);
  } catch (const TokenizerError&) {
    decode_refused = true;
  }
  StreamDecoder stream(tok);
  try {
    for (int32_t id : ids) stream.push(id);
  } catch (const TokenizerError&) {
    stream_refused = true;
  }
  FUZZ_CHECK(decode_refused && stream_refused);
  return 0;
}
