// Granite (models/granite_hybrid.cpp) beyond the golden suite of test_models:
//   - a prompt fed in one forward() call and the same prompt fed token by token give the same
//     logits at every position and leave the same Mamba2 conv and SSM state, for prompt lengths
//     around the SSD chunk size (1, chunk-1, chunk, chunk+1, 3 chunk+1), on all three fixtures;
//   - Granite 3.x (granite, granitemoe, granitemoeshared: no fixtures exist) built from small
//     synthetic configs with random_model(): they run, their prefill agrees with their decode;
//   - configs the code cannot run are refused with an error naming the key.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "golden.hpp"
#include "models/model.hpp"
#include "models/planner.hpp"
#include "testdata.hpp"

using namespace purellm;
using nlohmann::json;

namespace {

constexpr float kAtol = 1e-4f;  // the agreed bar (fixtures/README.md)

std::vector<float> copy(const Tensor& t) { return {t.ptr<const float>(), t.ptr<const float>() + t.numel()}; }

// Feeds `prompt` once whole and once a token at a time into fresh caches of `model` and
// compares the logits of every position and every layer's recurrent state.
void expect_prefill_matches_decode(Model& model, const std::vector<int32_t>& prompt, const std::string& what) {
  const int64_t T = static_cast<int64_t>(prompt.size()), V = model.info().vocab_size;
  Cache whole = model.make_cache(T);
  const std::vector<float> all = copy(model.forward(prompt, whole, Logits::All));  // [T, V]
  ASSERT_EQ(all.size(), static_cast<size_t>(T * V));
  Cache steps = model.make_cache(T);
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<float> one = copy(model.forward(std::span<const int32_t>(&prompt[static_cast<size_t>(t)], 1), steps));
    test::expect_close(one, std::span<const float>(all).subspan(static_cast<size_t>(t * V), static_cast<size_t>(V)), kAtol,
                       what + ": logits at position " + std::to_string(t));
  }
  EXPECT_EQ(whole.n_past(), steps.n_past());
  int recurrent = 0;
  for (size_t l = 0; l < whole.layers.size(); ++l) {
    const LayerCache &a = whole.layers[l], &b = steps.layers[l];
    if (a.ssm.empty()) continue;
    ++recurrent;
    // The conv state holds in_proj outputs: a GEMV per token vs one GEMM round differently.
    test::expect_close(copy(b.conv), copy(a.conv), kAtol, what + ": conv state of layer " + std::to_string(l));
    test::expect_close(copy(b.ssm), copy(a.ssm), kAtol, what + ": SSM state of layer " + std::to_string(l));
  }
  if (model.info().model_type == "granitemoehybrid") {
    EXPECT_GT(recurrent, 0) << what;
  }
}

class GraniteFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(GraniteFixture, PrefillInOneCallEqualsTokenByTokenAroundTheChunkSize) {
  REQUIRE_TESTDATA(dir, "fixtures/" + GetParam());
  const json config = read_json_file(dir + "/config.json");
  const int chunk = config.at("mamba_chunk_size").get<int>();
  auto model = load_model(dir);
  // Prompts longer than the fixture's own: its greedy sequence, repeated as needed.
  const std::vector<int64_t> seq = test::golden_i64(test::open_goldens(dir), "greedy_ids").values;
  for (int T : {1, chunk - 1, chunk, chunk + 1, 3 * chunk + 1}) {
    std::vector<int32_t> prompt;
    for (int t = 0; t < T; ++t) prompt.push_back(static_cast<int32_t>(seq[static_cast<size_t>(t) % seq.size()]));
    expect_prefill_matches_decode(*model, prompt, GetParam() + " T=" + std::to_string(T));
  }
}

// Half the prompt in one call, the rest token by token: the state a prefill leaves is the one
// decode continues from (the last positions' logits agree with one full forward).
TEST_P(GraniteFixture, DecodeContinuesFromAPrefilledState) {
  REQUIRE_TESTDATA(dir, "fixtures/" + GetParam());
  auto model = load_model(dir);
  const WeightFiles goldens = test::open_goldens(dir);
  const std::vector<int64_t> ids = test::golden_i64(goldens, "input_ids").values;
  const std::vector<int32_t> prompt(ids.begin(), ids.end());
  const std::vector<float> want = test::golden_f32(goldens, "logits").values;  // [T, V]
  const size_t T = prompt.size(), half = T / 2, V = static_cast<size_t>(model->info().vocab_size);
  Cache cache = model->make_cache(static_cast<int64_t>(T));
  model->forward(std::span<const int32_t>(prompt.data(), half), cache);
  for (size_t t = half; t < T; ++t) {
    const std::vector<float> one = copy(model->forward(std::span<const int32_t>(&prompt[t], 1), cache));
    test::expect_close(one, std::span<const float>(want).subspan(t * V, V), kAtol, "position " + std::to_string(t));
  }
}

// Cache::reset() zeroes the recurrent state: the same prompt gives the same logits again.
TEST_P(GraniteFixture, ResetCacheForgetsTheRecurrentState) {
  REQUIRE_TESTDATA(dir, "fixtures/" + GetParam());
  auto model = load_model(dir);
  const std::vector<int64_t> ids = test::golden_i64(test::open_goldens(dir), "input_ids").values;
  const std::vector<int32_t> prompt(ids.begin(), ids.end());
  Cache cache = model->make_cache(static_cast<int64_t>(prompt.size()));
  const std::vector<float> first = copy(model->forward(prompt, cache, Logits::All));
  cache.reset();
  test::expect_close(copy(model->forward(prompt, cache, Logits::All)), first, 0.0f, "logits after reset");
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GraniteFixture,
                         ::testing::Values("granite-hybrid-tiny", "granite-hybrid-g2-tiny", "granite-hybrid-moe-rope-tiny"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

// ---- Granite 3.x and other shapes, from synthetic configs ---------------------------------

json granite3_config(const std::string& model_type) {
  json c = {{"model_type", model_type}, {"vocab_size", 200}, {"hidden_size", 32}, {"intermediate_size", 48},
            {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
            {"max_position_embeddings", 64}, {"rms_norm_eps", 1e-6}, {"rope_theta", 10000.0},
            {"embedding_multiplier", 12.0}, {"attention_multiplier", 0.125}, {"residual_multiplier", 0.22},
            {"logits_scaling", 8.0}, {"tie_word_embeddings", true}, {"bos_token_id", 0}, {"eos_token_id", 0}};
  if (model_type != "granite") {
    c["num_local_experts"] = 4;
    c["num_experts_per_tok"] = 2;
  }
  if (model_type == "granitemoeshared") c["shared_intermediate_size"] = 64;
  return c;
}

std::vector<int32_t> some_ids(int n, int vocab) {
  std::vector<int32_t> ids;
  for (int i = 0; i < n; ++i) ids.push_back((i * 37 + 11) % vocab);
  return ids;
}

TEST(Granite3, DenseMoeAndSharedBuildRunAndDecodeLikeTheyPrefill) {
  for (const char* type : {"granite", "granitemoe", "granitemoeshared"}) {
    const json c = granite3_config(type);
    auto model = random_model(c, {});
    EXPECT_EQ(model->info().architecture, type);
    Cache cache = model->make_cache(9);
    const Tensor logits = model->forward(some_ids(9, 200), cache, Logits::All);
    ASSERT_EQ(logits.numel(), 9 * 200) << type;
    EXPECT_TRUE(std::all_of(logits.ptr<float>(), logits.ptr<float>() + logits.numel(), [](float v) { return std::isfinite(v); })) << type;
    expect_prefill_matches_decode(*model, some_ids(9, 200), type);
    // The planner sees the same model: every layer has a KV cache, no recurrent state.
    const ModelPlan plan = plan_model(c, nullptr);
    EXPECT_EQ(plan.cache_fixed_bytes, 0u) << type;
    EXPECT_EQ(plan.cache_bytes_per_token, 2u * 2 * 2 * 8 * sizeof(float)) << type;  // layers x (k, v) x kv heads x d
  }
}

// A checkpoint-shaped hybrid with all features at once (MoE, rope, 2 groups, biases, a
// time_step_limit, an untied head), and a longer chunk.
TEST(GraniteHybrid, SyntheticHybridWithEveryFeatureDecodesLikeItPrefills) {
  json c = granite3_config("granitemoehybrid");
  c.merge_patch({{"num_hidden_layers", 3}, {"layer_types", {"mamba", "attention", "mamba"}},
                 {"position_embedding_type", "rope"}, {"shared_intermediate_size", 40},
                 {"mamba_n_heads", 8}, {"mamba_d_head", 8}, {"mamba_d_state", 8}, {"mamba_d_conv", 4},
                 {"mamba_expand", 2}, {"mamba_n_groups", 2}, {"mamba_chunk_size", 8}, {"mamba_conv_bias", true},
                 {"mamba_proj_bias", true}, {"time_step_limit", {0.0, 0.5}}, {"tie_word_embeddings", false}});
  auto model = random_model(c, {});
  for (int T : {1, 7, 8, 9, 25}) expect_prefill_matches_decode(*model, some_ids(T, 200), "synthetic T=" + std::to_string(T));
}

// ---- bad configs name the key ---------------------------------------------------------------

std::string load_error(const json& config) {
  try {
    random_model(config, {});
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_REFUSED(config, patch, key)                                     \
  do {                                                                         \
    json c = (config);                                                         \
    c.merge_patch(patch);                                                      \
    const std::string msg = load_error(c);                                     \
    EXPECT_NE(msg.find("\"" key "\""), std::string::npos) << "error: " << msg; \
  } while (0)

TEST(GraniteConfig, BadValuesAreNamed) {
  REQUIRE_TESTDATA(dir, "fixtures/granite-hybrid-moe-rope-tiny");
  const json hybrid = read_json_file(dir + "/config.json");
  EXPECT_EQ(load_error(hybrid), "");
  EXPECT_REFUSED(hybrid, json({{"layer_types", {"mamba", "attention"}}}), "layer_types");  // 4 layers
  EXPECT_REFUSED(hybrid, json({{"layer_types", {"mamba", "attention", "mamba", "conv"}}}), "layer_types");
  EXPECT_REFUSED(hybrid, json({{"layer_types", nullptr}}), "layer_types");
  EXPECT_REFUSED(hybrid, json({{"mamba_d_head", 12}}), "mamba_d_head");      // 8 x 12 != 2 x 64
  EXPECT_REFUSED(hybrid, json({{"mamba_n_groups", 3}}), "mamba_n_groups");  // does not divide 8 heads
  EXPECT_REFUSED(hybrid, json({{"mamba_d_state", 0}}), "mamba_d_state");
  EXPECT_REFUSED(hybrid, json({{"position_embedding_type", "alibi"}}), "position_embedding_type");
  EXPECT_REFUSED(hybrid, json({{"logits_scaling", 0.0}}), "logits_scaling");
  EXPECT_REFUSED(hybrid, json({{"num_experts_per_tok", 5}}), "num_experts_per_tok");  // > 4 experts
  EXPECT_REFUSED(hybrid, json({{"time_step_limit", {0.1}}}), "time_step_limit");
  EXPECT_REFUSED(hybrid, json({{"time_step_limit", {0.5, 0.1}}}), "time_step_limit");
  EXPECT_REFUSED(hybrid, json({{"time_step_limit", {0.0, "big"}}}), "time_step_limit");
  EXPECT_REFUSED(hybrid, json({{"hidden_act", "gelu"}}), "hidden_act");
  EXPECT_REFUSED(hybrid, json({{"shared_intermediate_size", nullptr}}), "shared_intermediate_size");
  EXPECT_REFUSED(granite3_config("granite"), json({{"intermediate_size", nullptr}}), "intermediate_size");
  EXPECT_REFUSED(granite3_config("granitemoe"), json({{"num_local_experts", 0}}), "num_local_experts");
  EXPECT_REFUSED(granite3_config("granite"), json({{"num_attention_heads", 5}, {"num_key_value_heads", 5}}), "hidden_size");  // 32 % 5
  // "auto" head size and transformers 5's {"__float__": "Infinity"} are understood.
  json auto_head = hybrid;
  auto_head["mamba_d_head"] = "auto";
  auto_head["time_step_limit"] = json::array({0.0, {{"__float__", "Infinity"}}});
  EXPECT_EQ(load_error(auto_head), "");
}

// The real granite-4.0-h-350m config.json (transformers 5.x: rope_parameters, dtype,
// time_step_limit [0, {"__float__": "Infinity"}]) plans as 28 Mamba2 + 4 attention layers.
TEST(GraniteConfig, RealGranite4Config) {
  REQUIRE_TESTDATA(path, "configs/granite-4.0-h-350m/config.json");
  const ModelPlan p = plan_model(read_json_file(path), nullptr);
  EXPECT_EQ(p.info.architecture, "granitemoehybrid");
  EXPECT_EQ(p.info.n_layers, 32);
  EXPECT_EQ(p.stored_dtype, DType::BF16);
  // 340M parameters (the model card's "350m"): embedding 100352 x 768 tied, 28 Mamba2 and 4
  // attention layers, each with a 2048-wide shared MLP.
  EXPECT_GT(p.parameters, 300'000'000u);
  EXPECT_LT(p.parameters, 360'000'000u);
}

// The real configs' parameter counts, as the engine's own model file plans them, are the ones
// models.json gives for the aliases (granite-4.0-h-350m and granite-3.1-1b-a400m, whose
// config.json files are in the test data).
TEST(GraniteConfig, ParameterCountsMatchModelsJson) {
  const json registry = read_json_file(std::string(PURELLM_SOURCE_DIR) + "/models.json");
  for (auto [path, alias] : {std::pair{"configs/granite-4.0-h-350m/config.json", "granite-4.0-h-350m"},
                             std::pair{"tokenizers/granite-3.1/config.json", "granite-3.1-1b-a400m"}}) {
    REQUIRE_TESTDATA(file, path);
    const ModelPlan p = plan_model(read_json_file(file), nullptr);
    EXPECT_EQ(p.parameters, registry.at(alias).at("parameters").get<uint64_t>()) << alias;
    EXPECT_EQ(registry.at(alias).at("status"), "supported") << alias;
  }
}

}  // namespace
