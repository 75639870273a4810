// StreamDecoder: the pushed pieces are valid UTF-8 and add up to decode() of the whole sequence,
// for every golden line and for random id sequences full of partial characters and byte tokens.
#include <gtest/gtest.h>

#include <cstdint>

#include "tests/test_tokenizer_util.hpp"
#include "tokenizer/utf8.hpp"

using namespace purellm;
using namespace purellm::test;
using nlohmann::json;

namespace {

// Streams ids; every piece must be valid UTF-8 and the pieces must add up to decode(ids).
// Returns "" on success, else a description of the first problem.
std::string stream_problem(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  StreamDecoder stream(tok);
  std::string all;
  for (size_t i = 0; i < ids.size(); ++i) {
    std::string piece = stream.push(ids[i]);
    if (!tok::is_valid_utf8(piece)) return "push #" + std::to_string(i) + " returned invalid UTF-8: " + printable(piece);
    all += piece;
  }
  std::string rest = stream.finish();
  if (!tok::is_valid_utf8(rest)) return "finish() returned invalid UTF-8";
  all += rest;
  std::string whole = tok.decode(ids);
  if (all != whole) return "streamed \"" + printable(all) + "\" != decode \"" + printable(whole) + "\"";
  return "";
}

void check_golden_stream(const std::string& tokenizer_rel, const std::string& gold) {
  REQUIRE_TESTDATA(tok_path, tokenizer_rel);
  REQUIRE_TESTDATA(gold_path, "tokgold/" + gold + ".jsonl");
  const Tokenizer& tok = cached_tokenizer(tok_path);
  size_t pass = 0;
  auto lines = read_jsonl(gold_path);
  for (const json& line : lines) {
    auto ids = line.value("ids_fast_tokenizers_js", line["ids"]).get<std::vector<int32_t>>();
    std::string problem = stream_problem(tok, ids);
    if (problem.empty()) ++pass;
    else ADD_FAILURE() << gold << ": \"" << printable(line["text"].get<std::string>()) << "\": " << problem;
  }
  std::cout << gold << " stream: " << pass << "/" << lines.size() << "\n";
  EXPECT_EQ(pass, lines.size());
}

// Deterministic pseudo-random ids, biased towards the low ids where byte and byte-fallback
// tokens live, so incomplete and invalid UTF-8 is common.
std::vector<int32_t> random_ids(uint64_t seed, size_t n, int32_t vocab) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < n; ++i) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    uint32_t r = static_cast<uint32_t>(seed >> 33);
    ids.push_back(static_cast<int32_t>(r % 4 == 0 ? r % vocab : r % std::min(vocab, 300)));
  }
  return ids;
}

void check_random_stream(const std::string& tokenizer_rel) {
  REQUIRE_TESTDATA(tok_path, tokenizer_rel);
  const Tokenizer& tok = cached_tokenizer(tok_path);
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    auto ids = random_ids(seed, 1 + seed % 40, tok.vocab_size());
    std::string problem = stream_problem(tok, ids);
    ASSERT_EQ(problem, "") << "seed " << seed << ": ids " << ids_string(ids);
  }
}

}  // namespace

TEST(StreamDecoder, Gpt2Goldens) { check_golden_stream("tokenizers/gpt2/tokenizer.json", "gpt2"); }
TEST(StreamDecoder, Llama2Goldens) { check_golden_stream("tokenizers/llama2/tokenizer.json", "llama2"); }
TEST(StreamDecoder, Qwen2Goldens) { check_golden_stream("tokenizers/qwen2.5/tokenizer.reconstructed.json", "qwen2"); }

TEST(StreamDecoder, RandomIdsByteLevel) { check_random_stream("tokenizers/gpt2/tokenizer.json"); }
TEST(StreamDecoder, RandomIdsByteFallback) { check_random_stream("tokenizers/llama2/tokenizer.json"); }
TEST(StreamDecoder, RandomIdsStories260K) { check_random_stream("models/stories260K/tokenizer.json"); }

// Text is released as soon as it is final: a complete character right away, the bytes of a
// split character only once the character is complete.
TEST(StreamDecoder, HoldsOnlyIncompleteCharacters) {
  REQUIRE_TESTDATA(path, "tokenizers/gpt2/tokenizer.json");
  const Tokenizer& tok = cached_tokenizer(path);
  std::vector<int32_t> ids = tok.encode("a \xE2\x82\xAC");  // "a €": the euro sign spans two byte tokens
  ASSERT_EQ(tok.decode(ids), "a \xE2\x82\xAC");
  StreamDecoder stream(tok);
  std::string first = stream.push(ids[0]);
  EXPECT_EQ(first, "a");
  std::string text = first;
  for (size_t i = 1; i < ids.size(); ++i) text += stream.push(ids[i]);
  EXPECT_EQ(text, "a \xE2\x82\xAC");  // complete before finish()
  EXPECT_EQ(stream.finish(), "");
}

TEST(StreamDecoder, ReusableAfterFinish) {
  REQUIRE_TESTDATA(path, "tokenizers/llama2/tokenizer.json");
  const Tokenizer& tok = cached_tokenizer(path);
  std::vector<int32_t> ids = tok.encode(" leading space and \xF0\x9F\x98\x80 emoji");
  StreamDecoder stream(tok);
  std::string a, b;
  for (int32_t id : ids) a += stream.push(id);
  a += stream.finish();
  for (int32_t id : ids) b += stream.push(id);
  b += stream.finish();
  EXPECT_EQ(a, tok.decode(ids));
  EXPECT_EQ(b, a);
}
