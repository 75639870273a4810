// Post-processors (tokenizer.json "post_processor"): the ids encode(add_special = true) puts
// around the text's ids, e.g. Llama's BOS.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/json_util.hpp"

namespace purellm::tok {

struct PostProcessor {
  std::vector<int32_t> prefix, suffix;  // ids before / after the sequence (single-sequence template)

  void apply(std::vector<int32_t>& ids) const {
    ids.insert(ids.begin(), prefix.begin(), prefix.end());
    ids.insert(ids.end(), suffix.begin(), suffix.end());
  }
  // The BOS / EOS the template adds: its first prefix id and last suffix id.
  std::optional<int32_t> bos() const { return prefix.empty() ? std::nullopt : std::optional(prefix.front()); }
  std::optional<int32_t> eos() const { return suffix.empty() ? std::nullopt : std::optional(suffix.back()); }
};

// Types: TemplateProcessing, ByteLevel (adds nothing), RobertaProcessing, BertProcessing,
// Sequence; others are a TokenizerError naming the type.
PostProcessor post_processor_from_json(const json& spec, const std::string& where);

}  // namespace purellm::tok
