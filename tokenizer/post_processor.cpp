#include "tokenizer/post_processor.hpp"

namespace purellm::tok {

namespace {

// RobertaProcessing / BertProcessing store ["[CLS]", 101].
int32_t special_pair_id(const json& spec, const char* key, const std::string& where) {
  const json& v = require(spec, key, where);
  if (!v.is_array() || v.size() != 2 || !v[1].is_number_integer()) fail(where + "." + key, "expected [token, id]");
  return v[1].get<int32_t>();
}

void add_template(const json& spec, PostProcessor& pp, const std::string& where) {
  const json& single = require(spec, "single", where);
  if (!single.is_array()) fail(where + ".single", "expected an array");
  const json* specials = spec.contains("special_tokens") ? &spec["special_tokens"] : nullptr;
  PostProcessor t;
  bool seen_sequence = false;
  for (size_t i = 0; i < single.size(); ++i) {
    std::string iwhere = where + ".single[" + std::to_string(i) + "]";
    const json& piece = single[i];
    if (piece.contains("Sequence")) {
      if (seen_sequence) fail(iwhere, "a single-sequence template with two sequences");
      seen_sequence = true;
      continue;
    }
    if (!piece.contains("SpecialToken")) fail(iwhere, "expected {\"SpecialToken\": ...} or {\"Sequence\": ...}");
    std::string name = get_string(piece["SpecialToken"], "id", iwhere + ".SpecialToken");
    if (!specials || !specials->contains(name)) fail(iwhere, "special token \"" + name + "\" is not in special_tokens");
    const json& ids = require((*specials)[name], "ids", where + ".special_tokens." + name);
    if (!ids.is_array()) fail(where + ".special_tokens." + name + ".ids", "expected an array");
    for (const json& id : ids) {
      if (!id.is_number_integer()) fail(where + ".special_tokens." + name + ".ids", "expected integers");
      (seen_sequence ? t.suffix : t.prefix).push_back(id.get<int32_t>());
    }
  }
  // A later processor wraps what earlier ones produced.
  pp.prefix.insert(pp.prefix.begin(), t.prefix.begin(), t.prefix.end());
  pp.suffix.insert(pp.suffix.end(), t.suffix.begin(), t.suffix.end());
}

void add_processor(const json& spec, PostProcessor& pp, const std::string& where) {
  if (spec.is_null()) return;
  std::string type = type_of(spec, where);
  if (type == "ByteLevel") return;
  if (type == "TemplateProcessing") {
    add_template(spec, pp, where);
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    pp.prefix.insert(pp.prefix.begin(), special_pair_id(spec, "cls", where));
    pp.suffix.push_back(special_pair_id(spec, "sep", where));
  } else if (type == "Sequence") {
    const json& list = require(spec, "processors", where);
    if (!list.is_array()) fail(where + ".processors", "expected an array");
    for (size_t i = 0; i < list.size(); ++i) add_processor(list[i], pp, where + ".processors[" + std::to_string(i) + "]");
  } else {
    fail(where, "unsupported post_processor type \"" + type + "\"");
  }
}

}  // namespace

PostProcessor post_processor_from_json(const json& spec, const std::string& where) {
  PostProcessor pp;
  add_processor(spec, pp, where);
  return pp;
}

}  // namespace purellm::tok
