// Hard limits and bad values, checked before anything large is allocated: a KV cache that
// does not fit in memory, config.json values that are negative, fractional, infinite, NaN,
// strings or absurdly large for every registered architecture.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <functional>
#include <limits>

#include "models/layers.hpp"
#include "models/model.hpp"
#include "tensor/cpu/cpu_backend.hpp"
#include "testdata.hpp"

using namespace purellm;
using nlohmann::json;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// ---- KV cache vs memory ---------------------------------------------------------------------

TEST(CacheLimits, KvCacheLargerThanMemoryIsRefusedBeforeAllocating) {
  // 1000 layers x 2 x 2^24 positions x 65536 floats: 8.8 PB, on no machine.
  const auto start = std::chrono::steady_clock::now();
  const std::string msg = error_of([] { attention_cache(cpu_backend(), int64_t{1} << 24, 1000, 65536, DType::F32); });
  EXPECT_NE(msg.find("KV cache (1000 layers x 2 x 16777216 positions x 65536 F32 values) needs 8796093.02 GB"),
            std::string::npos) << msg;
  EXPECT_NE(msg.find("of memory is available"), std::string::npos) << msg;
  EXPECT_NE(msg.find("-c"), std::string::npos) << msg;  // says what to change
  // Refused up front: not after zeroing the first layers.
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 1.0);
}

TEST(CacheLimits, SizesThatOverflow64BitsAreRefusedToo) {
  const std::string msg = error_of([] {
    attention_cache(cpu_backend(), std::numeric_limits<int64_t>::max(), INT32_MAX, std::numeric_limits<int64_t>::max(),
                    DType::F16);
  });
  EXPECT_NE(msg.find("KV cache"), std::string::npos) << msg;
  Cache cache(cpu_backend(), 1);
  EXPECT_NE(error_of([&] { cache.alloc({int64_t{1} << 40, int64_t{1} << 40}); }).find("needs"), std::string::npos);
  EXPECT_EQ(cache.bytes(), 0u);
}

TEST(CacheLimits, ACacheThatFitsIsAllocatedAndCounted) {
  const Cache cache = attention_cache(cpu_backend(), 16, 3, 8, DType::F32);
  ASSERT_EQ(cache.layers.size(), 3u);
  EXPECT_EQ(cache.bytes(), 3u * 2 * 16 * 8 * sizeof(float));
  EXPECT_EQ(cache.layers[2].v.shape[0], 16);
  const Cache half = attention_cache(cpu_backend(), 16, 3, 8, DType::F16);  // an F16 cache: half the bytes
  EXPECT_EQ(half.bytes(), cache.bytes() / 2);
  EXPECT_EQ(half.layers[0].k.dtype, DType::F16);
}

// Through a real model: a config that allows 2^31 positions, and a cache asked for all of them.
TEST(CacheLimits, ModelCacheForItsWholeLongContextIsRefused) {
  REQUIRE_TESTDATA(dir, "fixtures/llama-tiny");
  json config = read_json_file(dir + "/config.json");
  config["max_position_embeddings"] = INT32_MAX;
  auto files = std::make_shared<const WeightFiles>(WeightFiles::open(dir));
  auto model = find_model(config)(config, *files, LoadOptions{});
  model->keep_weight_files(files);
  const std::string msg = error_of([&] { model->make_cache(INT32_MAX); });
  EXPECT_NE(msg.find("KV cache (2 layers x 2 x 2147483647 positions x 32 F32 values)"), std::string::npos) << msg;
  EXPECT_NO_THROW(model->make_cache(256));
}

// ---- config.json values, every architecture -------------------------------------------------

struct ArchKeys {
  const char* fixture;
  std::vector<const char*> counts;  // integer keys that size the model (must be >= 1)
  std::vector<const char*> reals;   // positive real keys (epsilons, rope_theta)
};

const std::vector<ArchKeys> kArchKeys = {
    {"gpt2-tiny", {"vocab_size", "n_positions", "n_embd", "n_layer", "n_head"}, {"layer_norm_epsilon"}},
    {"llama-tiny",
     {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
      "num_key_value_heads", "head_dim", "max_position_embeddings"},
     {"rms_norm_eps", "rope_theta"}},
    {"mistral-tiny", {"num_hidden_layers", "num_attention_heads"}, {"rms_norm_eps"}},
    {"qwen2-tiny", {"num_hidden_layers", "num_key_value_heads"}, {"rms_norm_eps"}},
    {"falcon-tiny", {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"},
     {"layer_norm_epsilon", "rope_theta"}},
    {"opt-tiny",
     {"vocab_size", "hidden_size", "ffn_dim", "num_hidden_layers", "num_attention_heads", "max_position_embeddings"},
     {}},
    {"gpt-neox-tiny",
     {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
      "max_position_embeddings"},
     {"layer_norm_eps", "rope_theta"}},
    {"bloom-tiny", {"vocab_size", "hidden_size", "n_layer", "n_head"}, {"layer_norm_epsilon"}},
};

// The error of building the fixture's model from `config` with no weights: config validation
// runs before any tensor is read, so a bad value is reported here; a good config ends at the
// first missing tensor.
std::string config_error(const json& config) {
  static const WeightFiles no_weights;
  return error_of([&] { find_model(config)(config, no_weights, LoadOptions{}); });
}

TEST(ConfigLimits, EveryFixtureConfigPassesValidation) {
  for (const ArchKeys& a : kArchKeys) {
    REQUIRE_TESTDATA(dir, std::string("fixtures/") + a.fixture);
    const std::string msg = config_error(read_json_file(dir + "/config.json"));
    EXPECT_NE(msg.find("not found among the 0 tensors"), std::string::npos) << a.fixture << ": " << msg;
  }
}

TEST(ConfigLimits, BadValuesAreRefusedNamingTheKey) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<json> bad_counts = {-1, 0, 2.5, inf, nan, "8", true, 1e12, json::array({4})};
  const std::vector<json> bad_reals = {-1.0, inf, -inf, nan, "1e-5", json::object()};
  for (const ArchKeys& a : kArchKeys) {
    REQUIRE_TESTDATA(dir, std::string("fixtures/") + a.fixture);
    const json original = read_json_file(dir + "/config.json");
    auto check = [&](const char* key, const json& value) {
      json config = original;
      config[key] = value;
      const std::string msg = config_error(config);
      EXPECT_NE(msg.find(std::string("\"") + key + "\""), std::string::npos)
          << a.fixture << ": " << key << " = " << value.dump() << " gave: " << msg;
    };
    for (const char* key : a.counts)
      for (const json& v : bad_counts) check(key, v);
    for (const char* key : a.reals)
      for (const json& v : bad_reals) check(key, v);
  }
}

// A window wider than any context is the same as none (so 1e12 is accepted); the rest is not.
TEST(ConfigLimits, BadSlidingWindowIsRefused) {
  REQUIRE_TESTDATA(dir, "fixtures/mistral-tiny");
  json config = read_json_file(dir + "/config.json");
  for (const json& v : {json(-1), json(0), json(2.5), json("8"), json(std::numeric_limits<double>::infinity())}) {
    config["sliding_window"] = v;
    EXPECT_NE(config_error(config).find("\"sliding_window\""), std::string::npos) << v.dump();
  }
}

// Counts that pass the integer range check but would make the model huge are refused before
// anything is allocated by them (this used to build a 16 GB per-layer table first).
TEST(ConfigLimits, HugeLayerCountsFailFastWithoutWeights) {
  for (const ArchKeys& a : kArchKeys) {
    REQUIRE_TESTDATA(dir, std::string("fixtures/") + a.fixture);
    json config = read_json_file(dir + "/config.json");
    for (const char* key : {"num_hidden_layers", "n_layer"})
      if (config.contains(key)) config[key] = INT32_MAX;
    const auto start = std::chrono::steady_clock::now();
    const std::string msg = config_error(config);
    EXPECT_FALSE(msg.empty()) << a.fixture;
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 1.0) << a.fixture;
  }
}

}  // namespace
