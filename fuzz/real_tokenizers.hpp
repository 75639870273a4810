// The real tokenizers the encode / decode fuzz targets run on, loaded once from the test data:
// GPT-2 (byte-level BPE, tokenizer.json), Llama 2 (SentencePiece-style BPE with byte fallback),
// Llama 3 (byte-level with a split regex), Qwen2.5 (vocab.json + merges.txt, NFC) and
// stories260K (a small trained SentencePiece-style vocab).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.hpp"
#include "tokenizer/tokenizer.hpp"

namespace purellm::fuzz {

struct RealTokenizer {
  std::string name;
  Tokenizer tok;
  bool round_trips;  // decode(encode(text)) == text for valid UTF-8 (no normalizer, no added space)
};

inline const std::vector<RealTokenizer>& real_tokenizers() {
  static const std::vector<RealTokenizer> all = [] {
    struct Spec {
      const char* name;
      const char* path;
      bool round_trips;
    };
    const Spec specs[] = {{"gpt2", "tokenizers/gpt2/tokenizer.json", true},
                          {"llama2", "tokenizers/llama2/tokenizer.json", false},
                          {"llama3", "tokenizers/llama3/tokenizer.json", true},
                          {"qwen2.5", "tokenizers/qwen2.5", false},
                          {"stories260K", "models/stories260K/tokenizer.json", false}};
    std::vector<RealTokenizer> out;
    for (const Spec& s : specs) {
      const std::string path = testdata_root() + "/" + s.path;
      try {
        out.push_back({s.name, Tokenizer::load(path), s.round_trips});
      } catch (const std::exception& e) {
        std::fprintf(stderr, "cannot load the %s tokenizer (set PURELLM_TESTDATA): %s\n", s.name, e.what());
        const char* required = std::getenv("PURELLM_REQUIRE_TESTDATA");
        std::exit(required && std::string(required) == "1" ? 1 : 77);  // 77: CTest's skip code
      }
    }
    return out;
  }();
  return all;
}

}  // namespace purellm::fuzz
