// The pieces of the pipeline on their own: UTF-8 repair, decoder semantics (ByteLevel,
// ByteFallback, Metaspace, Strip, no decoder), added-token flags, split behaviours and
// normalizers, mostly on small tokenizer.json files written by the test. The expected values
// are the behaviour of HF tokenizers' code (cited per test) and of Python's UTF-8 decoder.
#include <gtest/gtest.h>

#include <random>

#include "tests/test_tokenizer_util.hpp"
#include "tokenizer/bpe.hpp"
#include "tokenizer/byte_level.hpp"
#include "tokenizer/utf8.hpp"

using namespace purellm;
using namespace purellm::test;
using nlohmann::json;

namespace {

// A tokenizer.json with a BPE model over `tokens` (ids in order) and `merges`.
json make_tokenizer(const std::vector<std::string>& tokens, const std::vector<std::string>& merges) {
  json vocab = json::object();
  for (size_t i = 0; i < tokens.size(); ++i) vocab[tokens[i]] = i;
  return {{"version", "1.0"},
          {"added_tokens", json::array()},
          {"normalizer", nullptr},
          {"pre_tokenizer", nullptr},
          {"post_processor", nullptr},
          {"decoder", nullptr},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
}

Tokenizer load_json(const json& j) {
  TempDir dir;
  return Tokenizer::load(dir.write("tokenizer.json", j.dump()));
}

std::vector<int32_t> ids_of(const Tokenizer& tok, const std::vector<std::string>& tokens) {
  std::vector<int32_t> ids;
  for (const auto& t : tokens) ids.push_back(tok.token_id(t).value());
  return ids;
}

const std::string kFFFD = "\xEF\xBF\xBD";

}  // namespace

// Python: bytes.decode("utf-8", errors="replace") gives one U+FFFD per maximal invalid subpart.
TEST(Utf8, RepairLikePythonReplace) {
  EXPECT_EQ(tok::repair_utf8("\xE2\x82" "A"), kFFFD + "A");        // truncated 3-byte sequence
  EXPECT_EQ(tok::repair_utf8("\xF0\x9F\x98"), kFFFD);              // truncated at the end
  EXPECT_EQ(tok::repair_utf8("\xC0\xAF"), kFFFD + kFFFD);          // overlong lead, lone continuation
  EXPECT_EQ(tok::repair_utf8("\xED\xA0\x80"), kFFFD + kFFFD + kFFFD);  // encoded surrogate
  EXPECT_EQ(tok::repair_utf8("\xF4\x90\x80\x80"), kFFFD + kFFFD + kFFFD + kFFFD);  // above U+10FFFF
  EXPECT_EQ(tok::repair_utf8("\xE0\x80"), kFFFD + kFFFD);
  EXPECT_EQ(tok::repair_utf8("ab\xFF" "cd"), "ab" + kFFFD + "cd");
  EXPECT_EQ(tok::repair_utf8("\xE2\x82\xAC"), "\xE2\x82\xAC");
  EXPECT_TRUE(tok::is_valid_utf8("\xF4\x8F\xBF\xBF"));
  EXPECT_FALSE(tok::is_valid_utf8("\xF4\x90\x80\x80"));
}

// encode() of bytes that are not UTF-8 = encode() of the text Python's errors="replace" gives.
TEST(Encode, InvalidUtf8EncodesAsReplacementCharacters) {
  for (const char* rel : {"tokenizers/gpt2/tokenizer.json", "tokenizers/llama2/tokenizer.json"}) {
    REQUIRE_TESTDATA(path, std::string(rel));
    const Tokenizer& tok = cached_tokenizer(path);
    EXPECT_EQ(tok.encode("ab\xFF" "cd"), tok.encode("ab" + kFFFD + "cd")) << rel;
    EXPECT_EQ(tok.encode("x\xE2\x82"), tok.encode("x" + kFFFD)) << rel;
    std::mt19937 rng(7);
    for (int n = 0; n < 300; ++n) {
      std::string bytes(rng() % 40, '\0');
      for (char& c : bytes) c = static_cast<char>(rng());
      std::vector<int32_t> ids = tok.encode(bytes);
      EXPECT_EQ(ids, tok.encode(tok::repair_utf8(bytes))) << rel;
      EXPECT_TRUE(tok::is_valid_utf8(tok.decode(ids))) << rel;
    }
  }
}

// HF ByteLevel decoder: all tokens' bytes joined, then String::from_utf8_lossy.
TEST(Decode, ByteLevelJoinsBytesThenReplaces) {
  REQUIRE_TESTDATA(path, "tokenizers/gpt2/tokenizer.json");
  const Tokenizer& tok = cached_tokenizer(path);
  auto byte_ids = [&](std::string_view bytes) {
    std::vector<int32_t> ids;
    for (char b : bytes) ids.push_back(tok.token_id(tok::bytes_to_byte_level(std::string(1, b))).value());
    return ids;
  };
  EXPECT_EQ(tok.decode(byte_ids("\xE2\x82\xAC")), "\xE2\x82\xAC");
  EXPECT_EQ(tok.decode(byte_ids("\xE2\x82" "A")), kFFFD + "A");
  EXPECT_EQ(tok.decode(byte_ids("\xED\xA0\x80")), kFFFD + kFFFD + kFFFD);
  EXPECT_EQ(tok.decode(byte_ids("\xF0\x9F\x98")), kFFFD);
}

// HF ByteFallback decoder: a run of <0xNN> tokens that is not valid UTF-8 gives one U+FFFD per
// token (its own unit tests: <0xE5><0x8f> a -> "�", "�", "a"; <0xE5><0x8f><0xab> -> "叫").
TEST(Decode, ByteFallbackRuns) {
  REQUIRE_TESTDATA(path, "tokenizers/llama2/tokenizer.json");
  const Tokenizer& tok = cached_tokenizer(path);
  EXPECT_EQ(tok.decode(ids_of(tok, {"<0xE5>", "<0x8F>", "\u2581a"})), kFFFD + kFFFD + " a");
  EXPECT_EQ(tok.decode(ids_of(tok, {"<0xE5>", "<0x8F>", "<0xAB>"})), "\xE5\x8F\xAB");
  EXPECT_EQ(tok.decode(ids_of(tok, {"<0x41>", "<0xFF>"})), kFFFD + kFFFD);  // the whole run is replaced
}

// Without a decoder HF joins the token strings with spaces.
TEST(Decode, NoDecoderJoinsWithSpaces) {
  Tokenizer tok = load_json(make_tokenizer({"a", "b", "ab"}, {"a b"}));
  EXPECT_EQ(tok.encode("abab"), ids_of(tok, {"ab", "ab"}));
  EXPECT_EQ(tok.decode(ids_of(tok, {"ab", "a", "b"})), "ab a b");
}

// HF Metaspace decoder drops every "▁" of the first token and turns the others into spaces.
TEST(Decode, MetaspaceFirstToken) {
  json j = make_tokenizer({"\u2581", "a", "b", "\u2581a", "\u2581\u2581"}, {"\u2581 a"});
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "always"}, {"split", true}};
  j["decoder"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "always"}, {"split", true}};
  Tokenizer tok = load_json(j);
  EXPECT_EQ(tok.encode("a ab"), ids_of(tok, {"\u2581a", "\u2581a", "b"}));
  EXPECT_EQ(tok.decode(ids_of(tok, {"\u2581a", "\u2581a", "b"})), "a ab");
  EXPECT_EQ(tok.decode(ids_of(tok, {"\u2581\u2581", "\u2581a"})), " a");
}

// HF Strip after Fuse acts on the joined string: here one leading and two trailing spaces.
TEST(Decode, StripAfterFuse) {
  json j = make_tokenizer({" ", "a", " a "}, {});
  j["decoder"] = {{"type", "Sequence"},
                  {"decoders", {{{"type", "Fuse"}}, {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 2}}}}};
  Tokenizer tok = load_json(j);
  std::vector<int32_t> ids = ids_of(tok, {" ", " ", "a", " ", " a ", " ", " "});
  EXPECT_EQ(tok.decode(ids), " a  a ");  // "  a  a   " minus 1 leading and 2 trailing spaces
  StreamDecoder stream(tok);
  std::string text;
  for (int32_t id : ids) text += stream.push(id);
  EXPECT_EQ(text + stream.finish(), tok.decode(ids));
}

// HF AddedVocabulary::find_matches: lstrip / rstrip swallow neighbouring whitespace,
// single_word tokens only match outside words.
TEST(AddedTokens, StripAndSingleWordFlags) {
  json j = make_tokenizer({"a", "b", " ", "<l>", "<r>", "[w]", "[", "w", "]"}, {});
  auto added = [](int id, const char* content, bool lstrip, bool rstrip, bool single_word) {
    return json{{"id", id}, {"content", content}, {"lstrip", lstrip}, {"rstrip", rstrip}, {"single_word", single_word},
                {"normalized", false}, {"special", true}};
  };
  j["added_tokens"] = {added(3, "<l>", true, false, false), added(4, "<r>", false, true, false), added(5, "[w]", false, false, true)};
  Tokenizer tok = load_json(j);
  EXPECT_EQ(tok.encode("a  <l>b"), ids_of(tok, {"a", "<l>", "b"}));
  EXPECT_EQ(tok.encode("a<r>  b"), ids_of(tok, {"a", "<r>", "b"}));
  EXPECT_EQ(tok.encode("a [w] b"), ids_of(tok, {"a", " ", "[w]", " ", "b"}));
  EXPECT_EQ(tok.encode("a[w]b"), ids_of(tok, {"a", "[", "w", "]", "b"}));
  EXPECT_TRUE(tok.is_special(*tok.token_id("<l>")));
  EXPECT_FALSE(tok.is_special(*tok.token_id("a")));
}

// HF SplitDelimiterBehavior on the pattern "-".
TEST(PreTokenizer, SplitBehaviors) {
  json base = make_tokenizer({"a", "b", "-", "a-", "-b", "a-b", "--"}, {"a -", "- b", "a- b", "- -"});
  auto encode_with = [&](const char* behavior, const std::string& text) {
    json j = base;
    j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", behavior}, {"invert", false}};
    Tokenizer tok = load_json(j);
    std::vector<std::string> out;
    for (int32_t id : tok.encode(text)) out.push_back(tok.token_text(id));
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(encode_with("Isolated", "a-b"), (V{"a", "-", "b"}));
  EXPECT_EQ(encode_with("Removed", "a-b"), (V{"a", "b"}));
  EXPECT_EQ(encode_with("MergedWithPrevious", "a-b"), (V{"a-", "b"}));
  EXPECT_EQ(encode_with("MergedWithNext", "a-b"), (V{"a", "-b"}));
  EXPECT_EQ(encode_with("Contiguous", "a--b"), (V{"a", "--", "b"}));
  EXPECT_EQ(encode_with("MergedWithPrevious", "a--b"), (V{"a-", "-", "b"}));
}

TEST(Normalizer, NfkcThenLowercase) {
  json j = make_tokenizer({"f", "i", "a", "\xC3\xA9"}, {});
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFKC"}}, {{"type", "Lowercase"}}}}};
  Tokenizer tok = load_json(j);
  EXPECT_EQ(tok.encode("\xEF\xAC\x81" "A"), ids_of(tok, {"f", "i", "a"}));  // U+FB01 LATIN SMALL LIGATURE FI
  EXPECT_EQ(tok.encode("E\xCC\x81"), ids_of(tok, {"\xC3\xA9"}));           // E + combining acute -> é
}

TEST(Encode, AddSpecialUsesTemplate) {
  REQUIRE_TESTDATA(path, "tokenizers/llama2/tokenizer.json");
  const Tokenizer& tok = cached_tokenizer(path);
  std::vector<int32_t> plain = tok.encode("Hello"), with = tok.encode("Hello", true);
  ASSERT_EQ(with.size(), plain.size() + 1);
  EXPECT_EQ(with.front(), tok.bos_id());
  EXPECT_TRUE(std::equal(plain.begin(), plain.end(), with.begin() + 1));
  EXPECT_EQ(tok.encode("", true), std::vector<int32_t>{*tok.bos_id()});
  EXPECT_TRUE(tok.encode("").empty());
}

TEST(Vocab, SizeAndTokenText) {
  REQUIRE_TESTDATA(path, "tokenizers/llama3/tokenizer.json");
  REQUIRE_TESTDATA(config_path, "tokenizers/llama3/tokenizer_config.json");
  const Tokenizer& tok = cached_tokenizer(path);
  json config = json::parse(read_text_file(config_path));
  int32_t max_added = 0;
  for (auto it = config["added_tokens_decoder"].begin(); it != config["added_tokens_decoder"].end(); ++it) {
    int32_t id = std::stoi(it.key());
    max_added = std::max(max_added, id);
    EXPECT_EQ(tok.token_text(id), it.value()["content"].get<std::string>());
    EXPECT_EQ(tok.token_id(it.value()["content"].get<std::string>()), id);
    EXPECT_TRUE(tok.is_special(id));
  }
  EXPECT_EQ(tok.vocab_size(), max_added + 1);
  EXPECT_EQ(tok.bos_id(), tok.token_id(config["bos_token"].get<std::string>()));
  EXPECT_EQ(tok.eos_id(), tok.token_id(config["eos_token"].get<std::string>()));
}

// Long words are cut where no merge can join the two sides (BpeModel::merge_in_pieces); the
// result must equal merging the whole word at once. The word: every golden text, normalized as
// Llama-2's tokenizer.json does (Prepend "▁", Replace " " -> "▁"), run together.
TEST(Bpe, CuttingLongWordsChangesNothing) {
  REQUIRE_TESTDATA(path, "tokenizers/llama2/tokenizer.json");
  REQUIRE_TESTDATA(gold, "tokgold/llama2.jsonl");
  json j = json::parse(read_text_file(path));
  auto model = tok::BpeModel::from_json(j["model"], false, path);
  std::string normalized;
  for (const json& line : read_jsonl(gold)) {
    normalized += "\u2581";
    for (char c : line["text"].get<std::string>()) {
      if (c == ' ') normalized += "\u2581";
      else normalized += c;
    }
  }
  ASSERT_GT(normalized.size(), 5000u);
  std::vector<int32_t> cut, whole;
  model->tokenize(normalized, cut);
  model->tokenize_reference(normalized, whole);
  EXPECT_EQ(cut, whole);
}

// HF ByteLevel add_prefix_space: a space is put before text that does not start with one.
TEST(PreTokenizer, ByteLevelAddPrefixSpace) {
  REQUIRE_TESTDATA(path, "tokenizers/gpt2/tokenizer.json");
  const Tokenizer& plain = cached_tokenizer(path);
  json j = json::parse(read_text_file(path));
  j["pre_tokenizer"]["add_prefix_space"] = true;
  Tokenizer prefixed = load_json(j);
  EXPECT_EQ(prefixed.encode("Hello world"), plain.encode(" Hello world"));
  EXPECT_EQ(prefixed.encode(" Hello world"), plain.encode(" Hello world"));
}
