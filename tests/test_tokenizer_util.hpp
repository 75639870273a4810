// Shared helpers of the tokenizer tests: reading the test vector files and describing
// mismatches readably.
#pragma once

#include <nlohmann/json.hpp>


#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "tests/temp_dir.hpp"
#include "tests/testdata.hpp"
#include "tokenizer/tokenizer.hpp"

namespace purellm::test {

inline std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One input of a llama.cpp tokenizer test file pair (ggml-vocab-*.gguf.inp / .out).
struct VocabCase {
  std::string text;
  std::vector<int32_t> ids;
};

// The .inp file is every text followed by "\n__ggml_vocab_test__\n"; the .out file has one line
// per text with its ids, each preceded by a space (convert_hf_to_gguf_update.py writes both).
inline std::vector<VocabCase> read_vocab_cases(const std::string& inp_path, const std::string& out_path) {
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::string inp = read_text_file(inp_path);
  std::vector<VocabCase> cases;
  for (size_t pos = 0, next; (next = inp.find(sep, pos)) != std::string::npos; pos = next + sep.size())
    cases.push_back({inp.substr(pos, next - pos), {}});
  std::istringstream out(read_text_file(out_path));
  std::string line;
  for (size_t i = 0; std::getline(out, line); ++i) {
    if (i >= cases.size()) break;
    std::istringstream ids(line);
    for (int32_t id; ids >> id;) cases[i].ids.push_back(id);
  }
  return cases;
}

inline std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(read_text_file(path));
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

// Text with control and non-ASCII bytes escaped, for failure messages.
inline std::string printable(const std::string& s, size_t max = 120) {
  std::string out;
  for (unsigned char c : s.substr(0, max)) {
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    }
  }
  if (s.size() > max) out += "...";
  return out;
}

inline std::string ids_string(const std::vector<int32_t>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ' ';
    out += std::to_string(ids[i]);
  }
  return out;
}

// Loaded once per test binary run: several tests share the big tokenizers.
inline const Tokenizer& cached_tokenizer(const std::string& path) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& slot = cache[path];
  if (!slot) slot = std::make_unique<Tokenizer>(Tokenizer::load(path));
  return *slot;
}

}  // namespace purellm::test
