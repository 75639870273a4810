// tokenize: text -> token ids with a Hugging Face tokenizer (and back, for checking).
//
//   tokenize --tokenizer PATH [--add-special] "text"        ids, space-separated, one line
//   tokenize --tokenizer PATH [--add-special] --jsonl FILE  per line {"text": ...} ->
//                                                            {"ids": [...], "decoded": "..."}
// PATH: tokenizer.json, or a folder with tokenizer.json / vocab.json + merges.txt /
// encoder.json + vocab.bpe. FILE "-" reads standard input. Without --add-special no BOS/EOS is
// added (HF add_special_tokens=False).
#include <nlohmann/json.hpp>

#include <fstream>
#include <iostream>
#include <string>

#include "tokenizer/tokenizer.hpp"

namespace {

int usage(const char* message) {
  std::cerr << "tokenize: " << message << "\n"
            << "usage: tokenize --tokenizer PATH [--add-special] \"text\"\n"
            << "       tokenize --tokenizer PATH [--add-special] --jsonl FILE\n";
  return 2;
}

int run_jsonl(const purellm::Tokenizer& tok, const std::string& file, bool add_special) {
  std::ifstream in_file;
  if (file != "-") {
    in_file.open(file, std::ios::binary);
    if (!in_file) {
      std::cerr << "tokenize: " << file << ": cannot open\n";
      return 1;
    }
  }
  std::istream& in = file == "-" ? std::cin : in_file;
  std::string line;
  for (size_t line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::string where = file + ":" + std::to_string(line_no) + ": ";
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      std::cerr << "tokenize: " << where << "invalid JSON: " << e.what() << "\n";
      return 1;
    }
    if (!j.is_object() || !j.contains("text") || !j["text"].is_string()) {
      std::cerr << "tokenize: " << where << "expected an object with a string \"text\"\n";
      return 1;
    }
    std::vector<int32_t> ids = tok.encode(j["text"].get<std::string>(), add_special);
    nlohmann::json out = {{"ids", ids}, {"decoded", tok.decode(ids)}};
    std::cout << out.dump() << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string tokenizer_path, jsonl, text;
  bool add_special = false, have_text = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--tokenizer" && i + 1 < argc) tokenizer_path = argv[++i];
    else if (a == "--jsonl" && i + 1 < argc) jsonl = argv[++i];
    else if (a == "--add-special") add_special = true;
    else if (a == "-h" || a == "--help") return usage("help"), 0;
    else if (a.starts_with("--")) return usage(("unknown option " + a).c_str());
    else if (!have_text) text = a, have_text = true;
    else return usage("more than one text argument");
  }
  if (tokenizer_path.empty()) return usage("--tokenizer PATH is required");
  if (jsonl.empty() == !have_text) return usage("give either a text or --jsonl FILE");
  try {
    purellm::Tokenizer tok = purellm::Tokenizer::load(tokenizer_path);
    if (!jsonl.empty()) return run_jsonl(tok, jsonl, add_special);
    std::vector<int32_t> ids = tok.encode(text, add_special);
    for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
    std::cout << "\n";
  } catch (const std::exception& e) {
    std::cerr << "tokenize: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
