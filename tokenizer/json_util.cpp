#include "tokenizer/json_util.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace purellm::tok {

std::string read_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) fail(path, "file not found");
  auto size = std::filesystem::file_size(path, ec);
  if (ec) fail(path, "cannot read file size: " + ec.message());
  if (size > kMaxFileBytes) fail(path, "file is " + std::to_string(size) + " bytes, more than the limit of " + std::to_string(kMaxFileBytes));
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, std::string("cannot open: ") + std::strerror(errno));
  std::string data(size, '\0');
  in.read(data.data(), static_cast<std::streamsize>(size));
  if (static_cast<size_t>(in.gcount()) != size) fail(path, "short read");
  return data;
}

json read_json(const std::string& path) {
  std::string text = read_file(path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail(path, std::string("invalid JSON: ") + e.what());
  }
}

PatternSpec get_pattern(const json& obj, const std::string& where) {
  const json& p = require(obj, "pattern", where);
  if (p.is_object() && p.contains("String") && p["String"].is_string()) return {p["String"].get<std::string>(), false};
  if (p.is_object() && p.contains("Regex") && p["Regex"].is_string()) return {p["Regex"].get<std::string>(), true};
  fail(where + ".pattern", "expected {\"String\": ...} or {\"Regex\": ...}");
}

}  // namespace purellm::tok
