// Model-specific config.json handling of the Falcon, OPT, GPT-NeoX and BLOOM files: old key
// names load the same model, and configs the code cannot run are refused with an error that
// names the offending key. Each case edits a fixture's config in memory (a JSON merge patch)
// and loads it with the fixture's own weights.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "golden.hpp"
#include "models/model.hpp"
#include "testdata.hpp"

using namespace purellm;
using nlohmann::json;

namespace {

std::unique_ptr<Model> load_patched(const std::string& dir, const json& patch) {
  json config = read_json_file(dir + "/config.json");
  config.merge_patch(patch);
  auto files = std::make_shared<const WeightFiles>(WeightFiles::open(dir, LoadMode::Copy));
  auto model = find_model(config)(config, *files, LoadOptions{});
  model->keep_weight_files(std::move(files));  // the weights may point into the files' memory
  return model;
}

// The error message of loading `fixture` with `patch` applied ("" if it loads).
std::string load_error(const std::string& dir, const json& patch) {
  try {
    load_patched(dir, patch);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_REFUSED(dir, patch, key)                                       \
  do {                                                                        \
    const std::string msg = load_error(dir, patch);                           \
    EXPECT_NE(msg.find("\"" key "\""), std::string::npos) << "error: " << msg; \
  } while (0)

TEST(FalconConfig, OldRefinedWebKeyNamesLoadTheSameModel) {
  REQUIRE_TESTDATA(dir, "fixtures/falcon40b-tiny");
  // The pre-transformers falcon-40b config: model_type RefinedWeb, n_head / n_layer / n_head_kv.
  const json old_names = {{"model_type", "RefinedWeb"}, {"architectures", {"RWForCausalLM"}},
                          {"num_attention_heads", nullptr}, {"n_head", 4},
                          {"num_hidden_layers", nullptr}, {"n_layer", 2},
                          {"num_kv_heads", nullptr}, {"n_head_kv", 2},
                          {"hidden_size", nullptr}, {"n_embed", 64},
                          {"num_ln_in_parallel_attn", nullptr}, {"ffn_hidden_size", nullptr}};
  auto model = load_patched(dir, old_names);
  const WeightFiles goldens = test::open_goldens(dir);
  const auto ids = test::golden_i64(goldens, "input_ids").values;
  const std::vector<int32_t> prompt(ids.begin(), ids.end());
  Cache cache = model->make_cache(static_cast<int64_t>(prompt.size()));
  const Tensor logits = model->forward(prompt, cache, Logits::All);
  test::expect_close({logits.ptr<float>(), static_cast<size_t>(logits.numel())},
                     test::golden_f32(goldens, "logits").values, 1e-4f, "RefinedWeb logits");
}

TEST(FalconConfig, UnsupportedVariantsAreRefusedByKey) {
  REQUIRE_TESTDATA(dir, "fixtures/falcon-tiny");
  EXPECT_REFUSED(dir, json({{"alibi", true}}), "alibi");
  EXPECT_REFUSED(dir, json({{"parallel_attn", false}}), "parallel_attn");
  EXPECT_REFUSED(dir, json({{"model_type", "RefinedWebModel"}, {"parallel_attn", nullptr}}), "parallel_attn");
  EXPECT_REFUSED(dir, json({{"rope_scaling", {{"rope_type", "dynamic"}, {"factor", 2.0}}}}), "rope_type");
}

TEST(FalconConfig, BadValuesAreNamed) {
  REQUIRE_TESTDATA(dir, "fixtures/falcon40b-tiny");
  EXPECT_REFUSED(dir, json({{"num_kv_heads", 3}}), "num_kv_heads");  // does not divide 4 heads
  EXPECT_REFUSED(dir, json({{"num_attention_heads", 5}}), "hidden_size");  // 64 % 5
  EXPECT_REFUSED(dir, json({{"layer_norm_epsilon", -1e-5}}), "layer_norm_epsilon");
  EXPECT_REFUSED(dir, json({{"layer_norm_epsilon", std::numeric_limits<double>::quiet_NaN()}}), "layer_norm_epsilon");
  EXPECT_REFUSED(dir, json({{"num_hidden_layers", -2}}), "num_hidden_layers");
  EXPECT_REFUSED(dir, json({{"multi_query", "yes"}}), "multi_query");
}

TEST(FalconConfig, SevenBIgnoresNumKvHeadsLikeTransformers) {
  REQUIRE_TESTDATA(dir, "fixtures/falcon-tiny");  // says num_kv_heads 4; multi_query means 1
  EXPECT_EQ(load_error(dir, json({{"num_kv_heads", 3}})), "");
}

TEST(OptConfig, UnsupportedVariantsAreRefusedByKey) {
  REQUIRE_TESTDATA(dir, "fixtures/opt-tiny");
  EXPECT_REFUSED(dir, json({{"do_layer_norm_before", false}}), "do_layer_norm_before");
  EXPECT_REFUSED(dir, json({{"word_embed_proj_dim", 32}}), "word_embed_proj_dim");
  EXPECT_REFUSED(dir, json({{"activation_function", "tanh"}}), "activation_function");
  EXPECT_REFUSED(dir, json({{"max_position_embeddings", 0}}), "max_position_embeddings");
}

TEST(GptNeoxConfig, BadValuesAreNamed) {
  REQUIRE_TESTDATA(dir, "fixtures/gpt-neox-tiny");
  EXPECT_REFUSED(dir, json({{"partial_rotary_factor", 0.01}}), "partial_rotary_factor");  // 0 rotary dims
  EXPECT_REFUSED(dir, json({{"partial_rotary_factor", nullptr}, {"rotary_pct", 1.5}}), "rotary_pct");
  EXPECT_REFUSED(dir, json({{"use_parallel_residual", false}}), "use_parallel_residual");
  EXPECT_REFUSED(dir, json({{"rope_theta", -1.0}}), "rope_theta");
}

TEST(BloomConfig, BadValuesAreNamed) {
  REQUIRE_TESTDATA(dir, "fixtures/bloom-tiny");
  EXPECT_REFUSED(dir, json({{"apply_residual_connection_post_layernorm", true}}),
                 "apply_residual_connection_post_layernorm");
  EXPECT_REFUSED(dir, json({{"n_head", 5}}), "hidden_size");  // 96 % 5
  EXPECT_REFUSED(dir, json({{"n_layer", 2.5}}), "n_layer");
}

}  // namespace
