// Reading tokenizer JSON with errors that name the file and the key.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

#include "tokenizer/tokenizer.hpp"

namespace purellm::tok {

using json = nlohmann::json;

// Largest file the loader reads (the biggest real tokenizer.json files are ~35 MB).
inline constexpr size_t kMaxFileBytes = size_t{1} << 30;

// The whole file; TokenizerError naming the path if it is missing, unreadable or too large.
std::string read_file(const std::string& path);
// Parsed JSON of the file; TokenizerError naming the path and the parser's message.
json read_json(const std::string& path);

[[noreturn]] inline void fail(const std::string& where, const std::string& what) {
  throw TokenizerError(where + ": " + what);
}

inline const json& require(const json& obj, const char* key, const std::string& where) {
  if (!obj.is_object()) fail(where, "expected a JSON object");
  auto it = obj.find(key);
  if (it == obj.end()) fail(where, std::string("missing key \"") + key + "\"");
  return *it;
}

inline std::string get_string(const json& obj, const char* key, const std::string& where) {
  const json& v = require(obj, key, where);
  if (!v.is_string()) fail(where + "." + key, "expected a string");
  return v.get<std::string>();
}

inline bool get_bool(const json& obj, const char* key, bool fallback, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) fail(where + "." + key, "expected true or false");
  return it->get<bool>();
}

inline int64_t get_int(const json& obj, const char* key, int64_t fallback, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_number_integer()) fail(where + "." + key, "expected an integer");
  return it->get<int64_t>();
}

// The "type" of a component object (normalizer, pre_tokenizer, decoder, ...).
inline std::string type_of(const json& obj, const std::string& where) { return get_string(obj, "type", where); }

// A pattern object {"String": "..."} or {"Regex": "..."}.
struct PatternSpec {
  std::string text;
  bool is_regex = false;
};
PatternSpec get_pattern(const json& obj, const std::string& where);

}  // namespace purellm::tok
