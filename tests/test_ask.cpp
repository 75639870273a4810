// The ask app end to end, run as a user would: exact greedy ids on fixtures, the real
// stories260K story, and a clear error (exit code 1, a message naming the problem) for each
// bad input the GPT-2 issue lists.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "ask_run.hpp"
#include "golden.hpp"
#include "testdata.hpp"

namespace fs = std::filesystem;
using namespace purellm;

namespace {

using test::AskRun;
using test::quote;

AskRun ask(const std::string& args) { return test::run_ask(args); }

std::string join(const std::vector<int64_t>& ids, const char* sep) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? sep : "") + std::to_string(ids[i]);
  return s;
}

// The text of the first "stdout of run.c" block in golden_run_c.txt.
std::string run_c_story(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string all = ss.str(), cut = "-----8<-----\n";
  const size_t a = all.find(cut) + cut.size();
  return all.substr(a, all.find(cut, a) - a);
}

TEST(Ask, PrintIdsReproducesGreedyGoldenOnGpt2Tiny) {
  REQUIRE_TESTDATA(dir, "fixtures/gpt2-tiny");
  const WeightFiles g = test::open_goldens(dir);
  const auto prompt = test::golden_i64(g, "input_ids").values;
  const auto greedy = test::golden_i64(g, "greedy_ids").values;
  const AskRun r = ask("-m " + quote(dir) + " --greedy --ignore-eos -n " + std::to_string(greedy.size() - prompt.size()) +
                    " --prompt-ids " + join(prompt, ",") + " --print-ids");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, join(greedy, " ") + "\n");
}

TEST(Ask, Stories260KTellsTheRunCStory) {
  REQUIRE_TESTDATA(dir, "models/stories260K");
  // run.c's -n 64 counts positions including the 4 prompt tokens after BOS: 60 new tokens.
  const AskRun r = ask("-m " + quote(dir) + " --greedy -n 60 'Once upon a time'");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, run_c_story(dir + "/golden_run_c.txt"));
}

TEST(Ask, Stories260KIdsMatchTheHfGolden) {
  REQUIRE_TESTDATA(dir, "models/stories260K");
  const auto greedy = test::golden_i64(test::open_goldens(dir), "greedy_ids").values;
  const AskRun r = ask("-m " + quote(dir) + " --greedy -n 64 --print-ids 'Once upon a time'");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, join(greedy, " ") + "\n");
}

// Bad inputs: exit code 1 and stderr naming the problem.
void expect_error(const std::string& args, const std::string& needle) {
  const AskRun r = ask(args);
  EXPECT_EQ(r.status, 1) << "args: " << args << "\nstdout: " << r.out;
  EXPECT_NE(r.err.find(needle), std::string::npos) << "args: " << args << "\nstderr: " << r.err;
}

TEST(AskErrors, MissingModelFolderOrUnknownAlias) {
  expect_error("-m /nonexistent/model --prompt-ids 1 --print-ids", "neither a folder nor an alias");
}

TEST(AskErrors, PromptLongerThanTheContext) {
  REQUIRE_TESTDATA(dir, "fixtures/gpt2-tiny");  // n_positions 64
  std::vector<int64_t> ids(65, 5);
  expect_error("-m " + quote(dir) + " --greedy -n 1 --prompt-ids " + join(ids, ",") + " --print-ids",
               "does not fit");
}

TEST(AskErrors, NPredictPastTheContext) {
  REQUIRE_TESTDATA(dir, "fixtures/gpt2-tiny");
  expect_error("-m " + quote(dir) + " --greedy -n 100 --prompt-ids 1,2,3 --print-ids", "exceed");
}

TEST(AskErrors, PromptIdsOutsideTheVocabularyOrMalformed) {
  REQUIRE_TESTDATA(dir, "fixtures/gpt2-tiny");  // vocab 1000
  expect_error("-m " + quote(dir) + " --prompt-ids 1,1000 --print-ids", "outside the vocabulary");
  expect_error("-m " + quote(dir) + " --prompt-ids 1,x --print-ids", "not a token id");
  expect_error("-m " + quote(dir) + " --prompt-ids 1,-2 --print-ids", "outside the vocabulary");
}

TEST(AskErrors, BadFlags) {
  expect_error("--top-p 2 x", "--top-p");
  expect_error("-n abc x", "-n");
  expect_error("--bogus x", "unknown option");
  expect_error("--dtype q3 x", "unknown dtype");
}

TEST(AskErrors, UnknownArchitectureListsTheSupportedOnes) {
  REQUIRE_TESTDATA(src, "fixtures/gpt2-tiny");
  const test::ScratchCopy copy(src, "ask");
  const fs::path& dir = copy.path();
  std::ofstream(dir / "config.json") << R"({"model_type": "mamba9", "architectures": ["Mamba9ForCausalLM"]})";
  expect_error("-m " + quote(dir.string()) + " --prompt-ids 1 --print-ids", "unsupported architecture");
  expect_error("-m " + quote(dir.string()) + " --prompt-ids 1 --print-ids", "gpt2");
}

TEST(AskErrors, CorruptOrMissingFiles) {
  REQUIRE_TESTDATA(src, "fixtures/gpt2-tiny");
  const test::ScratchCopy copy(src, "ask");
  const fs::path& dir = copy.path();
  std::ofstream(dir / "config.json") << "{ not json";
  expect_error("-m " + quote(dir.string()) + " --prompt-ids 1 --print-ids", "invalid JSON");
  fs::copy_file(fs::path(src) / "config.json", dir / "config.json", fs::copy_options::overwrite_existing);
  fs::resize_file(dir / "model.safetensors", 1000);  // truncated weights
  expect_error("-m " + quote(dir.string()) + " --prompt-ids 1 --print-ids", "model.safetensors");
  fs::remove(dir / "model.safetensors");
  expect_error("-m " + quote(dir.string()) + " --prompt-ids 1 --print-ids", "model.safetensors");
  fs::remove(dir / "config.json");
  expect_error("-m " + quote(dir.string()) + " --prompt-ids 1 --print-ids", "config.json");
}

TEST(AskErrors, NegativeConfigValueNamesTheKey) {
  REQUIRE_TESTDATA(src, "fixtures/gpt2-tiny");
  const test::ScratchCopy copy(src, "ask");
  const fs::path& dir = copy.path();
  std::ifstream in(fs::path(src) / "config.json");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string cfg = ss.str();
  cfg.replace(cfg.find("\"n_head\": 2"), 11, "\"n_head\": -2");
  std::ofstream(dir / "config.json") << cfg;
  expect_error("-m " + quote(dir.string()) + " --prompt-ids 1 --print-ids", "n_head");
}

}  // namespace

namespace {

// --random-weights builds a real-shaped model from a config alone (speed runs without downloads).
TEST(Ask, RandomWeightsFromAConfig) {
  REQUIRE_TESTDATA(dir, "fixtures/llama-tiny");
  const AskRun r = ask("--random-weights " + quote(dir + "/config.json") +
                       " --greedy --ignore-eos -n 5 --prompt-ids 1,2,3 --print-ids");
  ASSERT_EQ(r.status, 0) << r.err;
  std::istringstream ids(r.out);
  int64_t id, n = 0;
  while (ids >> id) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, 1000);
    ++n;
  }
  EXPECT_EQ(n, 8);
  expect_error("--random-weights " + quote(dir + "/config.json") + " 'text'", "needs --prompt-ids");
}

}  // namespace

namespace {

// One row of --profile's op table: "[profile]   LABEL CALLS US SHARE% [GB/s]".
struct OpRow {
  double calls = 0, us = 0, share = 0, gb_s = -1;  // gb_s: -1 where the row has none
};

// The op table's rows by label (the label may hold spaces: "matmul f32 1000 x 64"), and the
// share of "outside the ops".
std::map<std::string, OpRow> op_rows(const std::string& err, double& outside_share) {
  std::map<std::string, OpRow> rows;
  std::istringstream lines(err);
  std::string line;
  bool table = false;
  while (std::getline(lines, line)) {
    if (line.rfind("[profile]   op ", 0) == 0) table = true;
    if (!table || line.rfind("[profile]   ", 0) != 0 || line.rfind("[profile]   op ", 0) == 0) continue;
    std::vector<std::string> words;
    std::istringstream in(line.substr(12));
    for (std::string w; in >> w;) words.push_back(w);
    if (words.back() == "ops" || words.size() < 2) continue;
    OpRow r;
    if (words.back().back() != '%') r.gb_s = std::stod(words.back()), words.pop_back();
    r.share = std::stod(words.back()), words.pop_back();
    r.us = std::stod(words.back()), words.pop_back();
    std::string label;
    for (size_t i = 0; i + 1 < words.size(); ++i) label += (i ? " " : "") + words[i];
    if (label == "outside the") {  // "outside the ops US SHARE%": no calls column
      outside_share = r.share;
      continue;
    }
    r.calls = std::stod(words.back());
    rows[label] = r;
  }
  return rows;
}

// --profile times the decode steps (not the prompt's pass): per layer kind, then per op. Every
// count is read from the fixture's config: one attention per layer and step, four matrix
// products per GPT-2 block plus the vocabulary head, whose weights stream at some GB/s.
TEST(Ask, ProfileTimesEachOpOfTheDecodeSteps) {
  REQUIRE_TESTDATA(dir, "fixtures/gpt2-tiny");
  const nlohmann::json config = nlohmann::json::parse(std::ifstream(dir + "/config.json"));
  const int layers = config["n_layer"], vocab = config["vocab_size"], width = config["n_embd"];
  const AskRun r =
      ask("-m " + quote(dir) + " --greedy --ignore-eos -n 6 --prompt-ids 1,2,3,4,5 --print-ids --profile");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("[profile] 5 decode steps"), std::string::npos) << r.err;
  EXPECT_TRUE(std::regex_search(
      r.err, std::regex("\\[profile\\] attention layers: +" + std::to_string(layers) + ",")))
      << r.err;

  double outside = -1;
  const std::map<std::string, OpRow> rows = op_rows(r.err, outside);
  ASSERT_TRUE(rows.count("attention")) << r.err;
  EXPECT_EQ(rows.at("attention").calls, layers) << "a prompt token's pass was counted";
  const std::string head = "matmul f32 " + std::to_string(vocab) + " x " + std::to_string(width);
  ASSERT_TRUE(rows.count(head)) << r.err;
  EXPECT_EQ(rows.at(head).calls, 1.0);
  double matmuls = 0, shares = outside;
  for (const auto& [label, row] : rows) {
    const bool matmul = label.rfind("matmul ", 0) == 0;
    if (matmul) matmuls += row.calls;
    EXPECT_EQ(matmul, row.gb_s > 0) << label << ": weights GB/s only, and always, for matrix products";
    EXPECT_GT(row.us, 0) << label;
    shares += row.share;
  }
  EXPECT_EQ(matmuls, 4 * layers + 1) << r.err;
  EXPECT_GE(outside, 0) << r.err;
  EXPECT_NEAR(shares, 100.0, 0.05 * static_cast<double>(rows.size() + 1)) << r.err;
}

}  // namespace
