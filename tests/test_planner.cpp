// The memory planner against the engine itself: for every fixture and stories260K, the
// weights it plans from config.json alone are the checkpoint's tensors byte for byte (in their
// stored dtype) and what load_model() holds in memory (as stored, and converted at load);
// the cache it plans is what make_cache() allocates at several context sizes. State that does
// not grow with the context (Mamba2 layers) is checked on a small hybrid model registered only
// in this test, and on the real granite-4.0-h-350m config once a granite model file is
// registered in the build.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "models/layers.hpp"
#include "models/planner.hpp"
#include "testdata.hpp"

using namespace purellm;
namespace fs = std::filesystem;

namespace {

// ---- a toy hybrid model: attention layers with a KV cache, recurrent layers with state ----
//   config: {"model_type": "toy_hybrid", "vocab_size", "hidden_size", "max_position_embeddings",
//            "attention_layers", "kv_dim", "state_layers", "conv_dim", "d_conv", "n_heads",
//            "head_dim", "d_state"}
struct ToyConfig {
  int64_t vocab, hidden, max_positions, kv_dim, conv_dim, d_conv, n_heads, head_dim, d_state;
  int attention_layers, state_layers;
};

class ToyHybrid final : public Model {
 public:
  ToyHybrid(const ToyConfig& c, WeightLoader& w) : c_(c), be_(w.backend()), act_(be_) {
    embed_ = w.embedding("embed.weight", c.vocab, c.hidden);  // [V, D], also the head
    norm_ = w.vector("norm.weight", c.hidden);                // [D]
    info_.architecture = info_.model_type = "toy_hybrid";
    info_.vocab_size = c.vocab;
    info_.max_context = c.max_positions;
    info_.n_layers = c.attention_layers + c.state_layers;
    info_.hidden_size = static_cast<int>(c.hidden);
    info_.weight_bytes = w.bytes_loaded() + embed_.nbytes();
    info_.weight_bytes_per_token = info_.weight_bytes;
    memory_ = w.take_memory();
  }
  const ModelInfo& info() const override { return info_; }
  Cache make_cache(int64_t max_seq) const override {
    Cache cache(be_, std::min(max_seq, c_.max_positions));
    for (int l = 0; l < c_.attention_layers; ++l) {
      LayerCache lc;
      lc.k = cache.alloc({cache.max_seq(), c_.kv_dim});
      lc.v = cache.alloc({cache.max_seq(), c_.kv_dim});
      cache.layers.push_back(lc);
    }
    for (int l = 0; l < c_.state_layers; ++l) {
      LayerCache lc;
      lc.conv = cache.alloc({c_.conv_dim, c_.d_conv});
      lc.ssm = cache.alloc({c_.n_heads, c_.head_dim, c_.d_state});
      cache.layers.push_back(lc);
    }
    return cache;
  }
  Tensor forward(std::span<const int32_t> tokens, Cache& cache, Logits) override {
    const int64_t T = static_cast<int64_t>(tokens.size());
    check_room(cache, T, c_.max_positions);
    const Tensor x = act_.get(0, T, c_.hidden);          // [T, D]
    be_.embed(x, embed_, tokens);
    const Tensor logits = act_.get(1, 1, c_.vocab);      // [1, V]
    be_.matmul(logits, x.rows_view(T - 1, 1), embed_, Tensor{});
    cache.advance(T);
    return logits;
  }

 private:
  ToyConfig c_;
  Backend& be_;
  Activations act_;
  ModelInfo info_;
  Tensor embed_, norm_;
  std::vector<std::shared_ptr<void>> memory_;
};

std::unique_ptr<Model> load_toy(const nlohmann::json& j, const WeightFiles& files, const LoadOptions& options) {
  ConfigReader cfg(j);
  ToyConfig c{cfg.integer({"vocab_size"}),  cfg.integer({"hidden_size"}), cfg.integer({"max_position_embeddings"}),
              cfg.integer({"kv_dim"}),      cfg.integer({"conv_dim"}),    cfg.integer({"d_conv"}),
              cfg.integer({"n_heads"}),     cfg.integer({"head_dim"}),    cfg.integer({"d_state"}),
              static_cast<int>(cfg.integer({"attention_layers"}, {}, 0)),
              static_cast<int>(cfg.integer({"state_layers"}, {}, 0))};
  WeightLoader w(files, options);
  return std::make_unique<ToyHybrid>(c, w);
}

const ModelRegistration toy_registration("toy_hybrid", {"toy_hybrid"}, {}, load_toy);

nlohmann::json toy_config() {
  return {{"model_type", "toy_hybrid"}, {"vocab_size", 100}, {"hidden_size", 32}, {"max_position_embeddings", 4096},
          {"attention_layers", 2},      {"kv_dim", 16},      {"state_layers", 3}, {"conv_dim", 48},
          {"d_conv", 4},                {"n_heads", 4},      {"head_dim", 8},     {"d_state", 16},
          {"torch_dtype", "bfloat16"}};
}

TEST(Planner, RecurrentStateIsConstantAndKvGrowsPerToken) {
  const nlohmann::json c = toy_config();
  const uint64_t state = 3 * (48 * 4 + 4 * 8 * 16) * sizeof(float);  // conv [conv_dim, d_conv] + ssm [H, P, N]
  const uint64_t kv = 2 * 2 * 16 * sizeof(float);                    // 2 layers x (k + v) x kv_dim
  for (int64_t ctx : {1, 100, 4096}) {
    PlanOptions o;
    o.context = ctx;
    const ModelPlan p = plan_model(c, nullptr, o);
    EXPECT_EQ(p.cache_fixed_bytes, state) << "context " << ctx;
    EXPECT_EQ(p.cache_bytes_per_token, kv) << "context " << ctx;
    EXPECT_EQ(p.cache_bytes, state + kv * static_cast<uint64_t>(ctx)) << "context " << ctx;
    // ... and it is what the model allocates for real.
    EXPECT_EQ(p.cache_bytes, random_model(c, {})->make_cache(ctx).bytes()) << "context " << ctx;
  }
  // Weights: the embedding in the config's dtype, the norm in F32.
  const ModelPlan p = plan_model(c, nullptr);
  EXPECT_EQ(p.weight_bytes(), 100 * 32 * 2 + 32 * 4u);
  EXPECT_EQ(p.stored_dtype, DType::BF16);
  EXPECT_EQ(p.parameters, 100 * 32 + 32u);
}

TEST(Planner, LargestContextAndFitsFollowTheArithmetic) {
  PlanOptions o;
  o.context = 64;
  const ModelPlan p = plan_model(toy_config(), nullptr, o);
  const uint64_t base = p.weight_bytes() + p.activation_bytes + p.cache_fixed_bytes + kPlanReserveBytes;
  EXPECT_EQ(largest_context(p, base + 100 * p.cache_bytes_per_token), 100);
  EXPECT_EQ(largest_context(p, base + 100 * p.cache_bytes_per_token + p.cache_bytes_per_token - 1), 100);
  EXPECT_EQ(largest_context(p, base + p.cache_bytes_per_token - 1), 0);
  EXPECT_EQ(largest_context(p, uint64_t{1} << 50), 4096);  // capped at the model's maximum
  EXPECT_TRUE(plan_fits(p, p.total_bytes() + kPlanReserveBytes));
  EXPECT_FALSE(plan_fits(p, p.total_bytes() + kPlanReserveBytes - 1));
}

TEST(Planner, ActivationsGrowWithThePrefill) {
  PlanOptions small, large;
  small.prefill = 1;
  large.prefill = 64;
  const nlohmann::json c = toy_config();
  const ModelPlan a = plan_model(c, nullptr, small), b = plan_model(c, nullptr, large);
  EXPECT_EQ(a.activation_bytes, (1 * 32 + 100) * sizeof(float));   // x [1, D] + logits [1, V]
  EXPECT_EQ(b.activation_bytes, (64 * 32 + 100) * sizeof(float));  // x [64, D] + logits [1, V]
}

TEST(Planner, MemAvailableIsReadFromMeminfo) {
  const fs::path p = fs::temp_directory_path() / ("purellm_meminfo_" + std::to_string(::getpid()));
  std::ofstream(p) << "MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:   12345678 kB\n";
  EXPECT_EQ(mem_available_bytes(p.string()), 12345678ull * 1024);
  fs::remove(p);
  EXPECT_EQ(mem_available_bytes("/nonexistent/meminfo"), 0u);
  EXPECT_GT(mem_available_bytes(), 0u);  // this machine's
}

TEST(Planner, BadConfigsNameTheProblem) {
  nlohmann::json c = toy_config();
  c["torch_dtype"] = "float8";
  EXPECT_THROW(
      {
        try {
          plan_model(c, nullptr);
        } catch (const std::runtime_error& e) {
          EXPECT_NE(std::string(e.what()).find("torch_dtype"), std::string::npos) << e.what();
          throw;
        }
      },
      std::runtime_error);
  nlohmann::json unknown = {{"model_type", "no_such_model"}};
  EXPECT_THROW(plan_model(unknown, nullptr), std::runtime_error);
}

// ---- every fixture and stories260K -------------------------------------------------------

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

class PlanFixture : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = test::testdata_path(GetParam());
    if (dir_.empty()) {
      if (test::testdata_required()) FAIL() << "missing test data " << GetParam();
      GTEST_SKIP() << "test data not found: " << GetParam();
    }
    config_ = read_json_file(dir_ + "/config.json");
    try {
      find_model(config_);
    } catch (const std::exception& e) {
      GTEST_SKIP() << "no model file for this architecture in this build: " << e.what();
    }
  }
  ModelPlan plan(std::optional<DType> dtype, int64_t context = 0) const {
    PlanOptions o;
    o.weight_dtype = dtype;
    o.context = context;
    return plan_model(config_, nullptr, o);  // config.json alone
  }
  std::string dir_;
  nlohmann::json config_;
};

TEST_P(PlanFixture, WeightsFromTheConfigAloneAreTheCheckpointsTensors) {
  const ModelPlan p = plan(std::nullopt);
  const WeightFiles files = WeightFiles::open(dir_, LoadMode::Mmap);
  uint64_t stored_bytes = 0;
  int64_t numel = 0;
  for (const PlannedTensor& t : p.tensors) {
    stored_bytes += dtype_bytes(t.stored, t.numel());
    numel += t.numel();
  }
  int64_t file_numel = 0;
  for (const std::string& name : files.names()) {
    int64_t n = 1;
    for (int64_t d : files.info(name).shape) n *= d;
    file_numel += n;
  }
  EXPECT_EQ(p.tensors.size(), files.names().size());
  EXPECT_EQ(numel, file_numel);
  EXPECT_EQ(stored_bytes, files.total_bytes());
  EXPECT_EQ(p.parameters, static_cast<uint64_t>(file_numel));
  // With the files present every planned name exists and its shape was checked.
  const ModelPlan with_files = plan_model(config_, &files);
  for (const PlannedTensor& t : with_files.tensors) EXPECT_TRUE(files.has(t.name)) << t.name;
  EXPECT_EQ(with_files.weight_bytes(), p.weight_bytes());
}

TEST_P(PlanFixture, WeightBytesAreWhatTheLoaderHolds) {
  for (std::optional<DType> dtype : {std::optional<DType>{}, std::optional<DType>{DType::F32},
                                     std::optional<DType>{DType::F16}, std::optional<DType>{DType::BF16}}) {
    const std::string what = dtype ? std::string(dtype_name(*dtype)) : "as stored";
    LoadOptions load;
    load.weight_dtype = dtype;
    const ModelInfo real = load_model(dir_, load)->info();
    const ModelPlan p = plan(dtype);
    EXPECT_EQ(p.weight_bytes(), real.weight_bytes) << what;
    EXPECT_EQ(p.info.weight_bytes_per_token, real.weight_bytes_per_token) << what;
  }
}

TEST_P(PlanFixture, QuantizedMatricesCountTheirBlockScales) {
  const ModelPlan stored = plan(std::nullopt);
  for (auto [dtype, block_bytes] : {std::pair{DType::Q8_0, 34u}, std::pair{DType::Q4_0, 18u}}) {
    const ModelPlan q = plan(dtype);
    ASSERT_EQ(q.tensors.size(), stored.tensors.size());
    int quantized = 0;
    uint64_t sum = 0;
    for (size_t i = 0; i < q.tensors.size(); ++i) {
      const PlannedTensor& t = q.tensors[i];
      if (t.dtype == dtype) {
        ++quantized;
        EXPECT_EQ(t.numel() % 32, 0) << t.name;
        EXPECT_EQ(t.bytes, static_cast<uint64_t>(t.numel()) / 32 * block_bytes) << t.name;  // 32 values + an F16 scale
      } else {
        EXPECT_EQ(t.bytes, stored.tensors[i].bytes) << t.name;  // embeddings, norms and biases as before
      }
      sum += t.bytes;
    }
    EXPECT_GT(quantized, 0);
    // The embedding counts once even when it is also the head (it is not a separate tensor).
    EXPECT_LE(q.weight_bytes(), sum);
  }
}

TEST_P(PlanFixture, CacheBytesAreWhatTheEngineAllocates) {
  const std::unique_ptr<Model> model = load_model(dir_);
  const int64_t max = model->info().max_context;
  for (int64_t ctx : {int64_t{1}, int64_t{5}, int64_t{17}, max}) {
    const ModelPlan p = plan(std::nullopt, ctx);
    EXPECT_EQ(p.cache_bytes, model->make_cache(ctx).bytes()) << "context " << ctx;
    EXPECT_EQ(p.cache_bytes, p.cache_fixed_bytes + p.cache_bytes_per_token * static_cast<uint64_t>(ctx)) << ctx;
    EXPECT_GT(p.activation_bytes, 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, PlanFixture, ::testing::ValuesIn(model_dirs()), [](const auto& info) {
  std::string n = fs::path(info.param).filename().string();
  std::replace_if(n.begin(), n.end(), [](char c) { return !std::isalnum(static_cast<unsigned char>(c)); }, '_');
  return n;
});

// ---- the real granite-4.0-h-350m config (32 layers: 28 Mamba2, 4 attention) ----------------
// Expected sizes from the config's own numbers: Mamba2 conv state [d_inner + 2 n_groups d_state,
// d_conv] and SSM state [n_heads, head_dim, d_state] per Mamba layer; k and v of
// num_key_value_heads x (hidden_size / num_attention_heads) per attention layer and position.
TEST(PlannerGranite, MambaStateIsConstantOverTheContext) {
  REQUIRE_TESTDATA(path, "configs/granite-4.0-h-350m/config.json");
  const nlohmann::json c = read_json_file(path);
  try {
    find_model(c);
  } catch (const std::exception& e) {
    GTEST_SKIP() << "no granite model file in this build yet (the planner needs nothing else): " << e.what();
  }
  uint64_t mamba = 0, attention = 0;
  for (const auto& t : c["layer_types"]) (t == "mamba" ? mamba : attention)++;
  const uint64_t d_inner = c["mamba_n_heads"].get<uint64_t>() * c["mamba_d_head"].get<uint64_t>();
  const uint64_t conv_dim = d_inner + 2 * c["mamba_n_groups"].get<uint64_t>() * c["mamba_d_state"].get<uint64_t>();
  const uint64_t state = mamba * 4 *
                         (conv_dim * c["mamba_d_conv"].get<uint64_t>() +
                          d_inner * c["mamba_d_state"].get<uint64_t>());
  const uint64_t head_dim = c["hidden_size"].get<uint64_t>() / c["num_attention_heads"].get<uint64_t>();
  const uint64_t kv = attention * 2 * c["num_key_value_heads"].get<uint64_t>() * head_dim * 4;
  for (int64_t ctx : {1024, 4096, 32768}) {
    PlanOptions o;
    o.context = ctx;
    const ModelPlan p = plan_model(c, nullptr, o);
    EXPECT_EQ(p.cache_fixed_bytes, state) << ctx;
    EXPECT_EQ(p.cache_bytes_per_token, kv) << ctx;
    EXPECT_EQ(p.cache_bytes, state + kv * static_cast<uint64_t>(ctx)) << ctx;
  }
}

// ---- real configs against the Hub's numbers in models.json ---------------------------------
// The shared test data carries the real config.json of SmolLM2-135M and Qwen2.5-0.5B; their
// models.json entries hold the parameter count and the size of the BF16 checkpoint.
TEST(PlannerRealConfigs, ParameterCountsAndCheckpointSizesMatchModelsJson) {
  const nlohmann::json registry = read_json_file(std::string(PURELLM_SOURCE_DIR) + "/models.json");
  for (auto [folder, alias] : {std::pair{"tokenizers/smollm2", "smollm2-135m"}, std::pair{"tokenizers/qwen2.5", "qwen2.5-0.5b"}}) {
    const std::string dir = test::testdata_path(folder);
    if (dir.empty()) {
      if (test::testdata_required()) FAIL() << "missing test data " << folder;
      GTEST_SKIP() << "test data not found: " << folder;
    }
    const ModelPlan p = plan_model_dir(dir);
    const auto& entry = registry.at(alias);
    EXPECT_EQ(p.parameters, entry.at("parameters").get<uint64_t>()) << alias;
    uint64_t stored = 0;
    for (const PlannedTensor& t : p.tensors) stored += dtype_bytes(t.stored, t.numel());
    const uint64_t file = entry.at("weights_bytes").get<uint64_t>();  // tensors + the safetensors header
    EXPECT_LE(stored, file) << alias;
    EXPECT_LT(file - stored, 1'000'000u) << alias;
  }
}

// ---- choosing a model: -m auto --------------------------------------------------------------

TEST(Planner, LargestFittingModelPicksTheBiggestThatFits) {
  REQUIRE_TESTDATA(small, "fixtures/gpt2-tiny");
  REQUIRE_TESTDATA(big, "models/stories260K");
  PlanOptions o;
  o.context = 64;
  const ModelPlan ps = plan_model_dir(small, o), pb = plan_model_dir(big, o);
  ASSERT_LT(ps.weight_bytes(), pb.weight_bytes());
  const std::vector<std::string> dirs{small, big, "/nonexistent/model"};
  std::vector<std::string> notes;
  EXPECT_EQ(largest_fitting_model(dirs, 64, uint64_t{1} << 40, &notes), big);
  EXPECT_EQ(notes.size(), 3u);
  EXPECT_NE(notes[2].find("skipped"), std::string::npos) << notes[2];
  const uint64_t only_small = ps.total_bytes() + kPlanReserveBytes;
  ASSERT_LT(only_small, pb.total_bytes() + kPlanReserveBytes);
  EXPECT_EQ(largest_fitting_model(dirs, 64, only_small), small);
  EXPECT_EQ(largest_fitting_model(dirs, 64, 1000), std::nullopt);
}

}  // namespace
