// Bad inputs as users meet them: through the ask binary, each must end with exit status 1 and
// a message naming the file, tensor, key or flag (never a crash, never a SIGBUS). Cases that
// tests/test_ask.cpp already runs are not repeated here.
#include <gtest/gtest.h>

#include <map>

#include "ask_run.hpp"
#include "tensor/safetensors.hpp"
#include "testdata.hpp"

namespace fs = std::filesystem;
using namespace purellm;
using namespace purellm::test;
using nlohmann::json;

namespace {

void expect_error(const std::string& args, const std::vector<std::string>& needles) {
  const AskRun r = run_ask(args);
  EXPECT_EQ(r.status, 1) << "args: " << args << "\nstdout: " << r.out << "\nstderr: " << r.err;
  for (const std::string& needle : needles)
    EXPECT_NE(r.err.find(needle), std::string::npos) << "args: " << args << "\nwanted: " << needle << "\nstderr: " << r.err;
}

std::string numeric_run(const fs::path& dir, const std::string& extra = "") {
  return "-m " + quote(dir.string()) + " --greedy -n 2 --prompt-ids 1,2 --print-ids " + extra;
}

// ---- flags ----------------------------------------------------------------------------------

TEST(AskBadFlags, CountsOutsideTheirBounds) {
  REQUIRE_TESTDATA(dir, "fixtures/gpt2-tiny");
  const std::string m = "-m " + quote(dir) + " --prompt-ids 1 --print-ids ";
  expect_error(m + "-t 0", {"-t: 0 is outside [1, 1024]"});
  expect_error(m + "-t 1025", {"-t: 1025 is outside [1, 1024]"});
  expect_error(m + "-n -1", {"-n: -1 is outside [0, 16777216]"});
  expect_error(m + "-n 16777217", {"-n: 16777217 is outside [0, 16777216]"});
  expect_error(m + "-n 99999999999999999999", {"-n: expected an integer"});
  expect_error(m + "-c 0", {"-c: 0 is outside"});
  expect_error(m + "--temp nan", {"--temp: expected a number"});
  expect_error(m + "--temp inf", {"--temp: expected a number"});
  expect_error(m + "--seed -1", {"--seed: -1 is outside"});
  expect_error(m + "--kv-dtype q8_0", {"--kv-dtype: \"q8_0\" is not a KV cache dtype (f32, f16)"});
  expect_error(m + "-t", {"-t needs a value"});
}

// ---- weights --------------------------------------------------------------------------------

// Rewrites model.safetensors in `dir` with its header passed through `edit` (the data section
// is kept byte for byte; offsets are relative to it, so they stay valid).
void edit_header(const fs::path& file, const std::function<void(json&)>& edit) {
  const std::string bytes = read_file_text(file);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[size_t(i)]);
  json header = json::parse(bytes.substr(8, n));
  edit(header);
  const std::string text = header.dump();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((uint64_t(text.size()) >> (8 * i)) & 0xff);
  write_file_text(file, out + text + bytes.substr(8 + n));
}

TEST(AskBadWeights, HeaderEditsNameTheFileAndTheTensor) {
  REQUIRE_TESTDATA(src, "fixtures/gpt2-tiny");
  const std::string tensor = "transformer.wte.weight";
  struct Case {
    const char* name;
    std::function<void(json&)> edit;
    std::string detail;
  };
  const std::vector<Case> cases = {
      {"range before the data section (into the header)",
       [&](json& h) { h[tensor]["data_offsets"][0] = -16; }, "are negative"},
      {"2^63 shape", [&](json& h) { h[tensor]["shape"] = {uint64_t{1} << 63, 1}; }, "not an integer in [0, 2^63)"},
      {"dims multiplying past 2^63", [&](json& h) { h[tensor]["shape"] = {int64_t{1} << 40, int64_t{1} << 40}; },
       "multiply past 2^63"},
      {"overlap", [&](json& h) {
         json& r = h["transformer.wpe.weight"]["data_offsets"];  // 4 bytes earlier: into its neighbour
         r = {r[0].get<int64_t>() - 4, r[1].get<int64_t>() - 4};
       }, "overlap tensor"},
      {"unknown dtype", [&](json& h) { h[tensor]["dtype"] = "F8_E4M3"; }, "\"F8_E4M3\" is not supported"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    ScratchCopy dir(src, "bad_header");
    edit_header(dir.path() / "model.safetensors", c.edit);
    for (const char* mode : {"", "--mmap"}) {
      const AskRun r = run_ask(numeric_run(dir.path(), mode));
      EXPECT_EQ(r.status, 1) << r.err;
      EXPECT_NE(r.err.find("model.safetensors: tensor \""), std::string::npos) << r.err;
      EXPECT_NE(r.err.find(c.detail), std::string::npos) << r.err;
    }
  }
}

// A file cut short inside its data section: caught by validation in both load modes (with
// --mmap, reading the mapping past the end of the file would be SIGBUS).
TEST(AskBadWeights, TruncatedDataSectionInBothModes) {
  REQUIRE_TESTDATA(src, "fixtures/gpt2-tiny");
  ScratchCopy dir(src, "truncated");
  fs::resize_file(dir.path() / "model.safetensors", fs::file_size(dir.path() / "model.safetensors") - 10);
  for (const char* mode : {"", "--mmap"})
    expect_error(numeric_run(dir.path(), mode), {"model.safetensors: tensor \"", "is the file truncated?"});
}

// gpt2-tiny split into two shards plus model.safetensors.index.json; `edit` breaks it.
void write_shards(const ScratchCopy& dir, const std::function<void(json& index)>& edit) {
  const fs::path single = dir.path() / "model.safetensors";
  const std::vector<std::string> names = WeightFiles::open(single.string()).names();
  json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  for (const std::string& name : names) index["weight_map"][name] = "model-00001-of-00002.safetensors";
  fs::rename(single, dir.path() / "model-00001-of-00002.safetensors");
  edit(index);
  write_file_text(dir.path() / "model.safetensors.index.json", index.dump(2));
}

TEST(AskBadWeights, ShardedFolders) {
  REQUIRE_TESTDATA(src, "fixtures/gpt2-tiny");
  {
    ScratchCopy dir(src, "sharded_ok");
    write_shards(dir, [](json&) {});
    const AskRun r = run_ask(numeric_run(dir.path()));
    EXPECT_EQ(r.status, 0) << r.err;  // the split itself is valid
  }
  {
    ScratchCopy dir(src, "missing_shard");
    write_shards(dir, [](json& index) { index["weight_map"]["lm_head.weight"] = "model-00002-of-00002.safetensors"; });
    expect_error(numeric_run(dir.path()),
                 {"model.safetensors.index.json: tensor \"lm_head.weight\"", "model-00002-of-00002.safetensors",
                  "does not exist"});
  }
  {
    ScratchCopy dir(src, "truncated_shard");
    write_shards(dir, [](json&) {});
    const fs::path shard = dir.path() / "model-00001-of-00002.safetensors";
    fs::resize_file(shard, fs::file_size(shard) - 1);
    expect_error(numeric_run(dir.path(), "--mmap"), {"model-00001-of-00002.safetensors: tensor \"", "truncated"});
  }
}

// ---- config.json ----------------------------------------------------------------------------

TEST(AskBadConfig, NanAndInfinityAndHugeValues) {
  REQUIRE_TESTDATA(src, "fixtures/gpt2-tiny");
  ScratchCopy dir(src, "config_values");
  const std::string original = read_file_text(fs::path(src) / "config.json");
  auto with = [&](const std::string& from, const std::string& to) {
    std::string cfg = original;
    cfg.replace(cfg.find(from), from.size(), to);
    write_file_text(dir.path() / "config.json", cfg);
  };
  with("\"layer_norm_epsilon\": 1e-05", "\"layer_norm_epsilon\": NaN");  // Python's json.dump writes this
  expect_error(numeric_run(dir.path()), {"config.json: invalid JSON"});
  with("\"layer_norm_epsilon\": 1e-05", "\"layer_norm_epsilon\": 1e400");  // no double holds it
  expect_error(numeric_run(dir.path()), {"config.json: invalid JSON", "number overflow parsing '1e400'"});
  with("\"layer_norm_epsilon\": 1e-05", "\"layer_norm_epsilon\": -1e-05");
  expect_error(numeric_run(dir.path()), {"\"layer_norm_epsilon\" must be a finite number in [0.000000, 1.000000]"});
  with("\"n_layer\": 2", "\"n_layer\": 1e12");
  expect_error(numeric_run(dir.path()), {"\"n_layer\" must be in [1, 2147483647]"});
  with("\"vocab_size\": 1000", "\"vocab_size\": \"1000\"");
  expect_error(numeric_run(dir.path()), {"\"vocab_size\" must be an integer"});
}

// ---- tokenizer ------------------------------------------------------------------------------

TEST(AskBadTokenizer, MergeOfAnUnknownTokenAndMissingFile) {
  REQUIRE_TESTDATA(src, "models/stories260K");
  ScratchCopy dir(src, "bad_tokenizer");
  json tok = json::parse(read_file_text(dir.path() / "tokenizer.json"));
  ASSERT_TRUE(tok["model"]["merges"].is_array() && tok["model"]["merges"].size() > 3);
  tok["model"]["merges"][3] = "\u2581t zzzz";
  write_file_text(dir.path() / "tokenizer.json", tok.dump());
  expect_error("-m " + quote(dir.str()) + " -n 1 'Once'",
               {"tokenizer.json: model: merges[3]", "token \"zzzz\" is not in the vocabulary"});
  fs::remove(dir.path() / "tokenizer.json");
  expect_error("-m " + quote(dir.str()) + " -n 1 'Once'", {"no tokenizer.json"});
}

}  // namespace
