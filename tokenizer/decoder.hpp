// The decoder chain (tokenizer.json "decoder") as a streaming pipeline.
//
// HF decoders transform the list of token strings, step by step (Sequence), and join the result.
// Here each step is a stage that receives tokens one at a time and passes its output on as soon
// as later tokens can no longer change it. Fuse and ByteLevel join all tokens into one string;
// the stages after them receive that string piece by piece ("fused" input). Decoding a whole
// sequence is pushing every token and finishing, so streaming and whole-sequence decoding are the
// same code and give the same text.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/json_util.hpp"

namespace purellm::tok {

struct StageSpec {
  enum class Kind { ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace } kind;
  bool fused_input = false;  // receives pieces of one joined string instead of whole tokens
  std::string pattern, content;  // Replace (pattern empty when regex)
  std::string regex;             // Replace with a {"Regex": ...} pattern
  std::string strip_char;        // Strip: the character, UTF-8
  size_t start = 0, stop = 0;    // Strip
  std::string replacement;       // Metaspace
  bool prepend = true;           // Metaspace: prepend_scheme != never
};

class DecodeStage;

class DecodePipeline {
 public:
  explicit DecodePipeline(const std::vector<StageSpec>& stages, bool no_decoder);
  ~DecodePipeline();
  DecodePipeline(const DecodePipeline&) = delete;  // the sink writes into out_: the pipeline stays put
  DecodePipeline& operator=(const DecodePipeline&) = delete;
  void put(std::string_view token);  // one token's vocab string
  void finish();                     // flush everything held back; the pipeline starts afresh
  std::string take();                // the text produced since the last take()

 private:
  std::vector<std::unique_ptr<DecodeStage>> stages_;  // the decoder steps, then the output sink
  std::string out_;
};

// Reads tokenizer.json "decoder" (null -> no stages: HF then joins tokens with spaces).
// Types: Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace; others are a
// TokenizerError naming the type, as is an order this pipeline cannot stream (ByteFallback or
// ByteLevel after Fuse/ByteLevel).
std::vector<StageSpec> decoder_from_json(const json& spec, const std::string& where);

}  // namespace purellm::tok
