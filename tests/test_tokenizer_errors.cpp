// Bad input: every problem is a TokenizerError whose message names the file, key, type or id.
#include <gtest/gtest.h>

#include "tests/test_tokenizer_util.hpp"

using namespace purellm;
using namespace purellm::test;
using nlohmann::json;

namespace {

json small_tokenizer() {
  return {{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}}}, {"merges", {"a b"}}}},
          {"normalizer", nullptr},
          {"pre_tokenizer", nullptr},
          {"decoder", nullptr},
          {"post_processor", nullptr},
          {"added_tokens", json::array()}};
}

// Loads `content` as a tokenizer.json and returns the TokenizerError message ("" if none).
std::string load_error_text(const std::string& content, const std::string& name = "tokenizer.json") {
  TempDir dir;
  std::string path = dir.write(name, content);
  try {
    Tokenizer::load(path);
  } catch (const TokenizerError& e) {
    return e.what();
  }
  return "";
}

std::string load_error(const json& j) { return load_error_text(j.dump()); }

}  // namespace

TEST(TokenizerErrors, MissingFileOrFolderContents) {
  try {
    Tokenizer::load("/nonexistent/purellm/tokenizer.json");
    FAIL() << "no error";
  } catch (const TokenizerError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/purellm/tokenizer.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not found"), std::string::npos) << e.what();
  }
  TempDir empty;
  try {
    Tokenizer::load(empty.str());
    FAIL() << "no error";
  } catch (const TokenizerError& e) {
    EXPECT_NE(std::string(e.what()).find("no tokenizer.json"), std::string::npos) << e.what();
  }
  TempDir only_vocab;
  std::string vocab = only_vocab.write("vocab.json", R"({"a": 0})");
  try {
    Tokenizer::load(vocab);
    FAIL() << "no error";
  } catch (const TokenizerError& e) {
    EXPECT_NE(std::string(e.what()).find("merges.txt"), std::string::npos) << e.what();
  }
}

TEST(TokenizerErrors, InvalidJson) {
  std::string msg = load_error_text("{\"model\": {\"type\": \"BPE\", ");
  EXPECT_NE(msg.find("invalid JSON"), std::string::npos) << msg;
  EXPECT_NE(msg.find("tokenizer.json"), std::string::npos) << msg;
  EXPECT_NE(load_error_text("[1, 2]").find("expected a JSON object"), std::string::npos);
  EXPECT_NE(load_error(json{{"normalizer", nullptr}}).find("missing key \"model\""), std::string::npos);
}

TEST(TokenizerErrors, UnknownComponentTypesAreNamed) {
  ASSERT_EQ(load_error(small_tokenizer()), "");
  struct Case {
    const char* key;
    json value;
    const char* expect;
  };
  std::vector<Case> cases = {
      {"normalizer", {{"type", "Precompiled"}}, "unsupported normalizer type \"Precompiled\""},
      {"pre_tokenizer", {{"type", "UnicodeScripts"}}, "unsupported pre_tokenizer type \"UnicodeScripts\""},
      {"decoder", {{"type", "WordPiece"}}, "unsupported decoder type \"WordPiece\""},
      {"post_processor", {{"type", "Mystery"}}, "unsupported post_processor type \"Mystery\""},
  };
  for (const Case& c : cases) {
    json j = small_tokenizer();
    j[c.key] = c.value;
    std::string msg = load_error(j);
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.key << ": " << msg;
  }
  json j = small_tokenizer();
  j["model"]["type"] = "Unigram";
  std::string msg = load_error(j);
  EXPECT_NE(msg.find("unsupported model type \"Unigram\""), std::string::npos) << msg;
  j = small_tokenizer();
  j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "Digits"}}, {{"type", "Nope"}}}}};
  msg = load_error(j);
  EXPECT_NE(msg.find("pre_tokenizer.pretokenizers[1]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"Nope\""), std::string::npos) << msg;
}

TEST(TokenizerErrors, MergesWithUnknownTokens) {
  json j = small_tokenizer();
  j["model"]["merges"] = {"a b", "a zz"};
  std::string msg = load_error(j);
  EXPECT_NE(msg.find("merges[1]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("token \"zz\" is not in the vocabulary"), std::string::npos) << msg;
  j["model"]["merges"] = json::array({json::array({"b", "a"})});
  msg = load_error(j);
  EXPECT_NE(msg.find("merged token \"ba\""), std::string::npos) << msg;
  j["model"]["merges"] = {"ab"};
  EXPECT_NE(load_error(j).find("not two tokens"), std::string::npos);

  TempDir dir;
  dir.write("vocab.json", R"({"a": 0, "b": 1})");
  dir.write("merges.txt", "#version: 0.2\na b\n");
  try {
    Tokenizer::load(dir.str());
    FAIL() << "no error";
  } catch (const TokenizerError& e) {
    EXPECT_NE(std::string(e.what()).find("merged token \"ab\""), std::string::npos) << e.what();
  }
}

TEST(TokenizerErrors, VocabLimitsAndIds) {
  json j = small_tokenizer();
  j["model"]["vocab"]["huge"] = 5'000'000;
  std::string msg = load_error(j);
  EXPECT_NE(msg.find("vocab[\"huge\"]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("out of range"), std::string::npos) << msg;
  j = small_tokenizer();
  j["model"]["vocab"]["dup"] = 1;
  msg = load_error(j);
  EXPECT_NE(msg.find("id 1 is used by both"), std::string::npos) << msg;
  j = small_tokenizer();
  j["model"]["unk_token"] = "<unk>";
  msg = load_error(j);
  EXPECT_NE(msg.find("unk_token \"<unk>\" is not in the vocabulary"), std::string::npos) << msg;
}

TEST(TokenizerErrors, BadRegexAndUnstreamableDecoder) {
  json j = small_tokenizer();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  std::string msg = load_error(j);
  EXPECT_NE(msg.find("invalid regex /(unclosed/"), std::string::npos) << msg;
  j = small_tokenizer();
  j["decoder"] = {{"type", "Sequence"}, {"decoders", {{{"type", "Fuse"}}, {{"type", "ByteFallback"}}}}};
  msg = load_error(j);
  EXPECT_NE(msg.find("not supported"), std::string::npos) << msg;
}

TEST(TokenizerErrors, IdsOutOfRange) {
  TempDir dir;
  Tokenizer tok = Tokenizer::load(dir.write("tokenizer.json", small_tokenizer().dump()));
  ASSERT_EQ(tok.vocab_size(), 3);
  std::vector<int32_t> bad = {0, 7};
  try {
    tok.decode(bad);
    FAIL() << "no error";
  } catch (const TokenizerError& e) {
    EXPECT_NE(std::string(e.what()).find("token id 7 is out of range"), std::string::npos) << e.what();
  }
  EXPECT_THROW(tok.decode(std::vector<int32_t>{-1}), TokenizerError);
  EXPECT_THROW(tok.token_text(3), TokenizerError);
  StreamDecoder stream(tok);
  EXPECT_THROW(stream.push(3), TokenizerError);
  EXPECT_FALSE(tok.is_special(99));
}
