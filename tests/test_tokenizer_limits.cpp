// Tokenizer files cannot declare ids at or past kMaxVocab (4,194,304). Ids are also unique,
// so this caps the vocabulary size: no file makes the tokenizer allocate tables for more ids.
#include <gtest/gtest.h>


#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "tests/temp_dir.hpp"
#include "tokenizer/bpe.hpp"
#include "tokenizer/tokenizer.hpp"

using namespace purellm;
using nlohmann::json;

namespace {

std::string tokenizer_error(const std::map<std::string, std::string>& files) {
  const TempDir tmp("purellm_limits");
  for (const auto& [name, text] : files) tmp.write(name, text);
  std::string msg;
  try {
    Tokenizer::load(tmp.str());
  } catch (const TokenizerError& e) {
    msg = e.what();
  }
  return msg;
}

TEST(TokenizerLimits, IdsAtOrPastTheCapAreRefusedInEveryFile) {
  const std::string cap = std::to_string(tok::kMaxVocab);
  const json model = {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}}}, {"merges", {"a b"}}};
  const json added = json::array({{{"id", tok::kMaxVocab}, {"content", "<big>"}, {"special", true}}});
  std::string msg = tokenizer_error({{"tokenizer.json", json{{"model", model}, {"added_tokens", added}}.dump()}});
  EXPECT_NE(msg.find("added_tokens[0]: id " + cap + " out of range"), std::string::npos) << msg;

  const std::string vocab = R"({"a": 0, "b": 1, "ab": 2})", merges = "a b\n";
  msg = tokenizer_error({{"vocab.json", R"({"a": 0, "b": )" + cap + "}"}, {"merges.txt", ""}});
  EXPECT_NE(msg.find("vocab.json: \"b\": id " + cap + " out of range"), std::string::npos) << msg;
  msg = tokenizer_error({{"vocab.json", vocab}, {"merges.txt", merges}, {"added_tokens.json", R"({"<big>": )" + cap + "}"}});
  EXPECT_NE(msg.find("id out of range"), std::string::npos) << msg;
  msg = tokenizer_error({{"vocab.json", vocab}, {"merges.txt", merges},
                         {"tokenizer_config.json", R"({"added_tokens_decoder": {")" + cap + R"(": {"content": "x"}}})"}});
  EXPECT_NE(msg.find("not a valid token id"), std::string::npos) << msg;
  // 2^32 + 1 must not wrap around to id 1.
  msg = tokenizer_error({{"vocab.json", vocab}, {"merges.txt", merges}, {"added_tokens.json", R"({"<wrap>": 4294967297})"}});
  EXPECT_NE(msg.find("id out of range"), std::string::npos) << msg;
}

}  // namespace
