// The inspect app end to end, and ask's --trace / --model auto: run as a user would, their
// output checked against the checkpoints and the transformers goldens.
//   - the description and the memory plan work on every fixture, and on a folder that holds
//     only config.json (after models_download.py --config-only);
//   - the trace file of every fixture, read back with our safetensors reader, holds
//     transformers' hidden_states.N; with --trace-attn, causal attention probabilities;
//   - the logit lens of the last layer is the model's own output.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "app_runner.hpp"
#include "golden.hpp"
#include "temp_dir.hpp"
#include "models/model.hpp"
#include "testdata.hpp"

using namespace purellm;
using test::quote;
namespace fs = std::filesystem;

namespace {

test::AppRun inspect(const std::string& args) { return test::run_app(PURELLM_BIN_DIR, "inspect", args); }
test::AppRun ask(const std::string& args) { return test::run_app(PURELLM_BIN_DIR, "ask", args); }

std::string join(const std::vector<int64_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(ids[i]);
  }
  return s;
}

std::vector<std::string> model_dirs() {
  std::vector<std::string> names;
  const std::string root = test::testdata_path("fixtures");
  if (!root.empty())
    for (const auto& e : fs::directory_iterator(root))
      if (e.is_directory()) names.push_back("fixtures/" + e.path().filename().string());
  names.push_back("models/stories260K");
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<float> values(const WeightFiles& f, const std::string& name) {
  return test::golden_f32(f, name).values;
}

class InspectFixture : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = test::testdata_path(GetParam());
    if (dir_.empty()) {
      if (test::testdata_required()) FAIL() << "missing test data " << GetParam();
      GTEST_SKIP() << "test data not found: " << GetParam();
    }
    try {
      find_model(read_json_file(dir_ + "/config.json"));
    } catch (const std::exception& e) {
      GTEST_SKIP() << "no model file for this architecture in this build: " << e.what();
    }
    goldens_ = std::make_unique<WeightFiles>(test::open_goldens(dir_));
    prompt_ = test::golden_i64(*goldens_, "input_ids").values;
  }
  std::string dir_;
  std::unique_ptr<WeightFiles> goldens_;
  std::vector<int64_t> prompt_;
};

TEST_P(InspectFixture, DescribesTheModelAndItsMemoryPlan) {
  const test::AppRun text = inspect("-m " + quote(dir_));
  ASSERT_EQ(text.status, 0) << text.err;
  for (const char* part : {"parameters", "tensors", "memory plan", "as stored", "Q4_0", "largest context"})
    EXPECT_NE(text.out.find(part), std::string::npos) << part << "\n" << text.out;

  const test::AppRun js = inspect("-m " + quote(dir_) + " --json -c 8");
  ASSERT_EQ(js.status, 0) << js.err;
  const nlohmann::json j = nlohmann::json::parse(js.out);
  const WeightFiles files = WeightFiles::open(dir_, LoadMode::Mmap);
  EXPECT_EQ(j["tensors"].size(), files.names().size());
  uint64_t numel = 0;
  for (const auto& name : files.names()) {
    uint64_t n = 1;
    for (int64_t d : files.info(name).shape) n *= static_cast<uint64_t>(d);
    numel += n;
  }
  EXPECT_EQ(j["parameters"].get<uint64_t>(), numel);
  EXPECT_EQ(j["plans"].size(), 5u);
  EXPECT_EQ(j["context"].get<int64_t>(), 8);
  // KV grows per token; recurrent (Mamba2) layers add a constant state.
  EXPECT_EQ(j["plans"][0]["cache_bytes"].get<uint64_t>(),
            j["cache_fixed_bytes"].get<uint64_t>() + 8 * j["cache_bytes_per_token"].get<uint64_t>());
  EXPECT_EQ(j["weight_bytes"].get<uint64_t>(), load_model(dir_)->info().weight_bytes);
}

// The trace file holds what transformers calls hidden_states.N: N = 0 the embedding stage,
// N = 1..L-1 the layer outputs, N = L after the final norm.
TEST_P(InspectFixture, TraceFileMatchesTheHiddenStateGoldens) {
  const TempDir tmp("purellm_inspect");
  const fs::path file = tmp.path() / (fs::path(dir_).filename().string() + ".safetensors");
  const test::AppRun r = inspect("-m " + quote(dir_) + " --trace " + quote(file.string()) + " --prompt-ids " + join(prompt_));
  ASSERT_EQ(r.status, 0) << r.err;
  const WeightFiles trace = WeightFiles::open(file.string(), LoadMode::Copy);
  const int L = static_cast<int>(load_model(dir_)->info().n_layers);
  const int64_t T = static_cast<int64_t>(prompt_.size());
  EXPECT_EQ(test::golden_i64(trace, "input_ids").values, prompt_);
  EXPECT_EQ(trace.info("embed").shape, (std::vector<int64_t>{T, int64_t{load_model(dir_)->info().hidden_size}}));
  test::expect_close(values(trace, "embed"), values(*goldens_, "hidden_states.0"), 1e-4f, "embed");
  for (int l = 0; l + 1 < L; ++l)
    test::expect_close(values(trace, "layer_out." + std::to_string(l)),
                       values(*goldens_, "hidden_states." + std::to_string(l + 1)), 1e-4f, "layer_out." + std::to_string(l));
  test::expect_close(values(trace, "layer_out." + std::to_string(L - 1)), values(*goldens_, "final_norm_input"), 1e-4f,
                     "layer_out.L-1");
  test::expect_close(values(trace, "final_norm_input"), values(*goldens_, "final_norm_input"), 1e-4f, "final_norm_input");
  test::expect_close(values(trace, "final_norm"), values(*goldens_, "hidden_states." + std::to_string(L)), 1e-4f,
                     "final_norm");
  EXPECT_FALSE(trace.has("attn_probs.0"));  // only with --trace-attn
}

TEST_P(InspectFixture, LogitLensOfTheLastLayerIsTheModelsOutput) {
  const test::AppRun r = inspect("-m " + quote(dir_) + " --logit-lens --json -k 3 --prompt-ids " + join(prompt_));
  ASSERT_EQ(r.status, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  const int L = static_cast<int>(load_model(dir_)->info().n_layers);
  ASSERT_EQ(j["stages"].size(), static_cast<size_t>(L + 2));  // embed, L layers, output
  EXPECT_EQ(j["stages"][0]["stage"], "embed");
  EXPECT_LE(j["last_layer_vs_output_max_abs_diff"].get<double>(), 1e-4);
  const auto& last = j["stages"][static_cast<size_t>(L)]["top"];
  const auto& output = j["stages"][static_cast<size_t>(L + 1)]["top"];
  EXPECT_EQ(last[0]["id"], output[0]["id"]);
  // The output's top token is the first greedy token transformers generated.
  const auto greedy = test::golden_i64(*goldens_, "greedy_ids").values;
  EXPECT_EQ(output[0]["id"].get<int64_t>(), greedy[prompt_.size()]);
  EXPECT_EQ(output.size(), 3u);
}

INSTANTIATE_TEST_SUITE_P(Models, InspectFixture, ::testing::ValuesIn(model_dirs()), [](const auto& info) {
  std::string n = fs::path(info.param).filename().string();
  std::replace_if(n.begin(), n.end(), [](char c) { return !std::isalnum(static_cast<unsigned char>(c)); }, '_');
  return n;
});

TEST(Inspect, AttentionProbabilitiesAreCausalRowsThatSumToOne) {
  REQUIRE_TESTDATA(dir, "models/stories260K");
  const TempDir tmp("purellm_inspect");
  const fs::path file = tmp.path() / "attn.safetensors";
  const test::AppRun r = inspect("-m " + quote(dir) + " --trace " + quote(file.string()) + " --trace-attn 'Once upon a time'");
  ASSERT_EQ(r.status, 0) << r.err;
  const WeightFiles trace = WeightFiles::open(file.string(), LoadMode::Copy);
  const int64_t T = static_cast<int64_t>(test::golden_i64(trace, "input_ids").values.size());
  for (int l = 0; l < 5; ++l) {
    const auto p = test::golden_f32(trace, "attn_probs." + std::to_string(l));
    ASSERT_EQ(p.shape, (std::vector<int64_t>{8, T, T}));  // 8 query heads
    for (int64_t h = 0; h < 8; ++h)
      for (int64_t t = 0; t < T; ++t) {
        double sum = 0;
        for (int64_t k = 0; k < T; ++k) {
          const float v = p.values[static_cast<size_t>((h * T + t) * T + k)];
          if (k > t) {
            EXPECT_EQ(v, 0.0f) << "a query sees a later key";
          }
          sum += v;
        }
        EXPECT_NEAR(sum, 1.0, 1e-5);
      }
  }
}

TEST(Inspect, ConfigAloneIsEnoughForTheDescriptionButNotForAPrompt) {
  REQUIRE_TESTDATA(src, "models/stories260K");
  const TempDir tmp("purellm_inspect");
  const fs::path& dir = tmp.path();
  fs::copy_file(fs::path(src) / "config.json", dir / "config.json", fs::copy_options::overwrite_existing);
  const test::AppRun r = inspect("-m " + quote(dir.string()));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("config only"), std::string::npos) << r.out;
  const test::AppRun plan = inspect("-m " + quote(dir.string()) + " --json");
  const test::AppRun full = inspect("-m " + quote(src) + " --json");
  ASSERT_EQ(plan.status, 0);
  ASSERT_EQ(full.status, 0);
  const auto a = nlohmann::json::parse(plan.out), b = nlohmann::json::parse(full.out);
  EXPECT_FALSE(a["has_weights"].get<bool>());
  EXPECT_TRUE(b["has_weights"].get<bool>());
  EXPECT_EQ(a["plans"], b["plans"]);  // the same plan before and after downloading
  const test::AppRun lens = inspect("-m " + quote(dir.string()) + " --logit-lens 'Once'");
  EXPECT_EQ(lens.status, 1);
  EXPECT_NE(lens.err.find("not downloaded"), std::string::npos) << lens.err;
}

TEST(Inspect, BadArgumentsGetClearErrors) {
  REQUIRE_TESTDATA(dir, "models/stories260K");
  auto expect_error = [](const test::AppRun& r, const std::string& needle) {
    EXPECT_EQ(r.status, 1) << r.out;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  };
  expect_error(inspect(""), "no model given");
  expect_error(inspect("-m /nonexistent/model"), "neither a folder nor an alias");
  expect_error(inspect("-m " + quote(dir) + " --trace /tmp/x.safetensors"), "need a prompt");
  expect_error(inspect("-m " + quote(dir) + " 'a prompt'"), "only used with --trace");
  expect_error(inspect("-m " + quote(dir) + " --dtype q3"), "unknown dtype");
  expect_error(inspect("-m " + quote(dir) + " --bogus"), "unknown option");
  expect_error(inspect("-m " + quote(dir) + " --trace /nonexistent/dir/t.safetensors 'Once'"), "/nonexistent/dir");
}

// ask --trace records the prompt's forward pass only (decode steps do not overwrite it).
TEST(AskTrace, RecordsThePromptPass) {
  REQUIRE_TESTDATA(dir, "fixtures/gpt2-tiny");
  const WeightFiles goldens = test::open_goldens(dir);
  const auto prompt = test::golden_i64(goldens, "input_ids").values;
  const TempDir tmp("purellm_inspect");
  const fs::path file = tmp.path() / "ask.safetensors";
  const test::AppRun r = ask("-m " + quote(dir) + " --greedy -n 3 --print-ids --trace " + quote(file.string()) +
                             " --trace-attn --prompt-ids " + join(prompt));
  ASSERT_EQ(r.status, 0) << r.err;
  const WeightFiles trace = WeightFiles::open(file.string(), LoadMode::Copy);
  test::expect_close(values(trace, "embed"), values(goldens, "hidden_states.0"), 1e-4f, "embed");
  test::expect_close(values(trace, "layer_out.0"), values(goldens, "hidden_states.1"), 1e-4f, "layer_out.0");
  test::expect_close(values(trace, "final_norm_input"), values(goldens, "final_norm_input"), 1e-4f, "final_norm_input");
  const int64_t T = static_cast<int64_t>(prompt.size());
  EXPECT_EQ(trace.info("attn_probs.1").shape, (std::vector<int64_t>{2, T, T}));
  // ask asks for the last position's logits only: final_norm is that row.
  const auto last = values(goldens, "hidden_states.2");
  test::expect_close(values(trace, "final_norm"), std::vector<float>(last.end() - 64, last.end()), 1e-4f, "final_norm");
}

// -m auto picks the largest downloaded model that fits (models folder from $PURELLM_MODELS).
TEST(AskAuto, PicksTheLargestDownloadedModelThatFits) {
  REQUIRE_TESTDATA(stories, "models/stories260K");
  REQUIRE_TESTDATA(gpt2, "fixtures/gpt2-tiny");
  const TempDir tmp("purellm_inspect");
  const fs::path& models = tmp.path();
  fs::create_directory_symlink(stories, models / "stories260K");
  fs::create_directory_symlink(gpt2, models / "gpt2-tiny");
  fs::create_directories(models / "config-only");
  fs::copy_file(fs::path(stories) / "config.json", models / "config-only" / "config.json");
  const std::string env = "PURELLM_MODELS=" + quote(models.string()) + " " + PURELLM_BIN_DIR + "/ask ";
  const test::AppRun a = test::run_app("/usr/bin", "env", env + "-m auto --greedy -n 8 'Once upon a time'");
  ASSERT_EQ(a.status, 0) << a.err;
  EXPECT_NE(a.err.find("stories260K"), std::string::npos) << a.err;  // bigger than gpt2-tiny
  EXPECT_EQ(a.out.rfind("Once upon a time", 0), 0u) << a.out;
  fs::remove_all(models);
  const test::AppRun none = test::run_app("/usr/bin", "env", env + "-m auto 'x'");
  EXPECT_EQ(none.status, 1);
  EXPECT_NE(none.err.find("-m auto"), std::string::npos) << none.err;
}

}  // namespace
