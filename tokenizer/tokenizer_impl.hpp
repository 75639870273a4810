// What a loaded Tokenizer holds, and the loaders that fill it.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/added_vocab.hpp"
#include "tokenizer/bpe.hpp"
#include "tokenizer/decoder.hpp"
#include "tokenizer/normalizer.hpp"
#include "tokenizer/post_processor.hpp"
#include "tokenizer/pre_tokenizer.hpp"

namespace purellm::tok {

struct TokenizerImpl {
  std::string source;  // the file(s) it came from, for error messages

  std::unique_ptr<Normalizer> normalizer;  // may be null
  PreTokenizerChain pre_tokenizer;
  std::unique_ptr<BpeModel> model;
  AddedVocab added;
  PostProcessor post;
  std::vector<StageSpec> decoder;
  bool no_decoder = false;  // the file has no decoder: HF joins token strings with " "

  // Filled by finish_loading():
  int32_t vocab_size = 0;
  std::vector<std::string> id_to_token;  // added tokens override the model's strings
  std::vector<bool> has_token;           // false for ids no token uses (decode skips them, as HF)
  std::vector<bool> special;
  StringMap added_ids;  // added token content -> id
  std::optional<int32_t> bos, eos;

  // Appends the ids of text (valid UTF-8), without post-processing.
  void encode(std::string_view text, std::vector<int32_t>& out) const;
  std::optional<int32_t> token_id(std::string_view token) const;

  // Builds the id tables and the added-token matchers from `added_tokens`, then settles
  // bos / eos from `config` (tokenizer_config.json, may be null), the post-processor, or names.
  void finish_loading(std::vector<AddedToken> added_tokens, const json& config);
};

std::shared_ptr<TokenizerImpl> load_tokenizer_json(const std::string& path);
// vocab.json + merges.txt (or encoder.json + vocab.bpe), GPT-2 / Qwen2 style.
std::shared_ptr<TokenizerImpl> load_vocab_files(const std::string& vocab_path, const std::string& merges_path);

}  // namespace purellm::tok
