// Every fixture whose architecture is registered is checked against its transformers goldens:
//   logits of one full forward (atol 1e-4), every hidden state through the trace hook,
//   the cached decode path (greedy_step_logits), and the greedy ids exactly.
// Fixtures are found by listing the fixtures folder; one whose architecture has no model file
// yet is skipped with that reason printed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <tuple>

#include <unistd.h>

#include "golden.hpp"
#include "models/generate.hpp"
#include "models/layers.hpp"
#include "models/trace.hpp"
#include "tensor/cpu/cpu_backend.hpp"
#include "tensor/cpu/reference.hpp"
#include "tensor/quant.hpp"
#include "tensor/safetensors_writer.hpp"
#include "temp_dir.hpp"
#include "testdata.hpp"

using namespace purellm;
namespace fs = std::filesystem;

namespace {

constexpr float kAtol = 1e-4f;  // the agreed bar (fixtures/README.md)

// Records the residual stream at the points transformers calls hidden_states.N.
class HiddenStates : public Tracer {
 public:
  explicit HiddenStates(int n_layers) : n_layers_(n_layers) {}
  void record(std::string_view name, int layer, const Tensor& t) override {
    if (name == "embed") keep(0, t);
    else if (name == "layer_out" && layer < n_layers_ - 1) keep(layer + 1, t);
    else if (name == "final_norm") keep(n_layers_, t);
    else if (name == "final_norm_input") final_norm_input = copy(t);
  }
  std::map<int, std::vector<float>> states;
  std::vector<float> final_norm_input;

 private:
  void keep(int n, const Tensor& t) { states[n] = copy(t); }
  static std::vector<float> copy(const Tensor& t) {
    std::vector<float> v;
    for (int64_t r = 0; r < t.rows(); ++r) v.insert(v.end(), t.row<float>(r), t.row<float>(r) + t.cols());
    return v;
  }
  int n_layers_;
};

std::vector<std::string> fixture_names() {
  std::vector<std::string> names;
  const std::string root = test::testdata_path("fixtures");
  if (root.empty()) return {"(missing fixtures folder)"};
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory()) names.push_back("fixtures/" + e.path().filename().string());
  names.push_back("models/stories260K");  // the real trained model: same checks
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<int32_t> to_ids(const std::vector<int64_t>& v) { return {v.begin(), v.end()}; }

std::span<const float> values(const Tensor& t) { return {t.ptr<const float>(), static_cast<size_t>(t.numel())}; }

class Fixture : public ::testing::TestWithParam<std::string> {
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
      GTEST_SKIP() << "no model file for this architecture yet: " << e.what();
    }
    model_ = load_model(dir_);
    golden_ = std::make_unique<WeightFiles>(test::open_goldens(dir_));
    prompt_ = ids("input_ids");
  }
  std::string dir_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<WeightFiles> golden_;
  std::vector<float> floats(const std::string& name) const { return test::golden_f32(*golden_, name).values; }
  std::vector<int32_t> ids(const std::string& name) const { return to_ids(test::golden_i64(*golden_, name).values); }
  std::vector<int32_t> prompt_;
};

TEST_P(Fixture, LogitsAndHiddenStatesMatchTransformers) {
  const int L = model_->info().n_layers;
  HiddenStates hs(L);
  model_->set_tracer(&hs);
  Cache cache = model_->make_cache(static_cast<int64_t>(prompt_.size()));
  const Tensor logits = model_->forward(prompt_, cache, Logits::All);
  model_->set_tracer(nullptr);

  test::expect_close(values(logits), floats("logits"), kAtol, "logits");
  for (int n = 0; n <= L; ++n) {
    ASSERT_TRUE(hs.states.count(n)) << "no trace point for hidden_states." << n;
    test::expect_close(hs.states[n], floats("hidden_states." + std::to_string(n)), kAtol,
                       "hidden_states." + std::to_string(n));
  }
  test::expect_close(hs.final_norm_input, floats("final_norm_input"), kAtol, "final_norm_input");
}

TEST_P(Fixture, CachedDecodeMatchesGreedyStepLogitsAndIds) {
  const std::vector<int32_t> expected = ids("greedy_ids");
  const std::vector<float> step_logits = floats("greedy_step_logits");
  const int64_t V = model_->info().vocab_size;
  const size_t n_new = expected.size() - prompt_.size();
  ASSERT_EQ(step_logits.size(), n_new * static_cast<size_t>(V));

  Cache cache = model_->make_cache(static_cast<int64_t>(expected.size()));
  SamplingOptions greedy;
  greedy.greedy = true;
  Sampler sampler(greedy);
  GenerateOptions opt;
  opt.max_new_tokens = static_cast<int64_t>(n_new);
  opt.stop_at_eos = false;
  // Check the logits of every step through a tracer-free hook: re-run step by step.
  size_t step = 0;
  std::vector<int32_t> ids = prompt_;
  Tensor logits = model_->forward(prompt_, cache, Logits::Last);
  for (; step < n_new; ++step) {
    const std::vector<float> want(step_logits.begin() + static_cast<std::ptrdiff_t>(step * V),
                                  step_logits.begin() + static_cast<std::ptrdiff_t>((step + 1) * V));
    test::expect_close(values(logits), want, kAtol, "greedy_step_logits[" + std::to_string(step) + "]");
    const int32_t next = sampler.sample({logits.ptr<float>(), static_cast<size_t>(V)}, ids);
    ids.push_back(next);
    if (step + 1 < n_new) logits = model_->forward(std::span<const int32_t>(&next, 1), cache, Logits::Last);
  }
  EXPECT_EQ(ids, expected);

  // The generation loop gives the same ids.
  Cache fresh = model_->make_cache(static_cast<int64_t>(expected.size()));
  const std::vector<int32_t> out = generate(*model_, fresh, prompt_, opt, sampler, [](int32_t) { return true; });
  std::vector<int32_t> all = prompt_;
  all.insert(all.end(), out.begin(), out.end());
  EXPECT_EQ(all, expected);
}

// The whole greedy path as one prompt (prompt + 15 generated tokens: past 16 queries, so the
// CPU's tiled attention road) gives, at each position, the logits transformers computed step by
// step for the next token.
TEST_P(Fixture, PrefillOfTheGreedyPathMatchesStepLogits) {
  const std::vector<int32_t> path = ids("greedy_ids");
  const std::vector<float> step_logits = floats("greedy_step_logits");
  const int64_t V = model_->info().vocab_size, P = static_cast<int64_t>(prompt_.size());
  const std::vector<int32_t> tokens(path.begin(), path.end() - 1);  // the last id is never fed
  Cache cache = model_->make_cache(static_cast<int64_t>(tokens.size()));
  const Tensor logits = model_->forward(tokens, cache, Logits::All);
  ASSERT_EQ(logits.rows(), static_cast<int64_t>(tokens.size()));
  for (int64_t step = 0; P - 1 + step < logits.rows(); ++step) {
    const std::span<const float> want(step_logits.data() + step * V, static_cast<size_t>(V));
    test::expect_close(std::span<const float>(logits.row<float>(P - 1 + step), static_cast<size_t>(V)), want, kAtol,
                       "logits at position " + std::to_string(P - 1 + step) + " vs greedy_step_logits[" +
                           std::to_string(step) + "]");
  }
}

// The dtype of the checkpoint's first matrix.
DType stored_matrix_dtype(const std::string& dir) {
  const WeightFiles files = WeightFiles::open(dir, LoadMode::Mmap);
  for (const auto& name : files.names())
    if (files.info(name).shape.size() == 2) return files.info(name).dtype;
  throw std::runtime_error(dir + ": no matrix");
}

// Both load modes give the same prefill and decode logits to the bit. The default copies the
// weights out of the mapped files, so the loader stacks q/k/v and gate/up into one matrix each
// (MatrixStack); --mmap reads them in place, apart.
TEST_P(Fixture, CopyAndMmapLoadsGiveTheSameLogits) {
  LoadOptions in_place;
  in_place.mode = LoadMode::Mmap;
  auto other = load_model(dir_, in_place);
  const auto n = static_cast<int64_t>(prompt_.size()) + 1;
  Cache c1 = model_->make_cache(n), c2 = other->make_cache(n);
  const Tensor a = model_->forward(prompt_, c1, Logits::All);
  const std::vector<float> av(a.ptr<float>(), a.ptr<float>() + a.numel());
  test::expect_close(values(other->forward(prompt_, c2, Logits::All)), av, 0.0f, "prefill logits");
  const std::vector<int32_t> next = {prompt_.front()};
  const Tensor d = model_->forward(next, c1, Logits::Last);
  const std::vector<float> dv(d.ptr<float>(), d.ptr<float>() + d.numel());
  test::expect_close(values(other->forward(next, c2, Logits::Last)), dv, 0.0f, "decode logits");
}

// Mixture-of-experts routing under quantized weights. A layer's top-k experts are a discrete
// choice: where two router logits nearly tie, quantization noise may pick the other expert,
// the layer's output jumps, and the jump stays in the caches (K/V rows, SSM state) that every
// later position reads. Such a flip is legitimate only at a near-tie: the F32 margin between
// the k-th and (k+1)-th expert must be within twice the router's own error.
struct RoutingCheck {
  int flips = 0;        // rows routed to a different set of experts
  int wide_flips = 0;   // of those, rows whose F32 margin was not a near-tie
};

// The sorted top-k experts of router row r [E] (ties: lower expert first, as the model picks),
// and, when asked, the margin between the k-th and (k+1)-th logit.
std::vector<int64_t> top_experts(const float* r, int64_t E, int k, float* margin = nullptr) {
  std::vector<int64_t> idx(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) idx[static_cast<size_t>(e)] = e;
  std::sort(idx.begin(), idx.end(), [r](int64_t a, int64_t b) { return r[a] > r[b] || (r[a] == r[b] && a < b); });
  if (margin) *margin = k < E ? r[idx[static_cast<size_t>(k - 1)]] - r[idx[static_cast<size_t>(k)]] : INFINITY;
  idx.resize(static_cast<size_t>(k));
  std::sort(idx.begin(), idx.end());
  return idx;
}

// Compares every "moe_router.N" [T, E] row the F32 and quantized forward calls recorded.
RoutingCheck compare_routing(const TraceRecorder& f32, const TraceRecorder& quant, int k) {
  RoutingCheck check;
  for (const auto& e : f32.entries()) {
    if (e.name.rfind("moe_router.", 0) != 0) continue;
    const TraceRecorder::Entry* q = quant.find(e.name);
    EXPECT_NE(q, nullptr) << e.name << " missing from the quantized trace";
    if (q == nullptr) continue;
    const int64_t T = e.shape[0], E = e.shape[1];
    for (int64_t t = 0; t < T; ++t) {
      const float* rf = e.values.data() + t * E;
      const float* rq = q->values.data() + t * E;
      float margin_f = 0.0f, err = 0.0f;
      for (int64_t i = 0; i < E; ++i) err = std::max(err, std::abs(rf[i] - rq[i]));
      if (top_experts(rf, E, k, &margin_f) == top_experts(rq, E, k)) continue;
      ++check.flips;
      check.wide_flips += margin_f > 2 * err;
    }
  }
  return check;
}

// Copies every cache tensor of `from` into `to` (same model shape, CPU backend).
void copy_cache(const Cache& from, Cache& to) {
  auto copy = [](const Tensor& src, const Tensor& dst) {
    if (src.empty()) return;
    if (src.dtype == dst.dtype) return (void)std::memcpy(dst.data, src.data, src.nbytes());
    for (int64_t r = 0; r < src.rows(); ++r)  // an F32 KV cache into an F16 one (quantized weights' default)
      convert_row_from_f32(dst.dtype, src.row<float>(r), dst.row(r), src.cols());
  };
  for (size_t i = 0; i < from.layers.size(); ++i) {
    copy(from.layers[i].k, to.layers[i].k);
    copy(from.layers[i].v, to.layers[i].v);
    copy(from.layers[i].conv, to.layers[i].conv);
    copy(from.layers[i].ssm, to.layers[i].ssm);
  }
}

// One walk of a quantized model beside the F32 model along the golden greedy path.
struct QuantWalk {
  double worst = 0.0;      // max abs logit error over all steps
  double worst_rel = 0.0;  // max of (abs error / max |F32 logit|) over the steps with no routing flip
  int steps = 0, agree = 0, flips = 0, flip_steps = 0;
};

// Teacher forced: each step feeds both models the F32 greedy token. With `synced`, the
// quantized model starts each step from the F32 model's caches, so the step's error is that
// step's quantization noise alone; without it, the quantized model keeps its own caches and the
// error is what a user sees, noise carried along in the K/V rows and the recurrent state.
// Checks as it goes: Q8_0 keeps the F32 top-1 wherever the F32 margin between the best two
// tokens exceeds twice the step's error, and routing flips only at near-ties.
QuantWalk walk_quantized(Model& f32, Model& quant, DType dt, std::span<const int32_t> prompt,
                         const std::vector<int32_t>& path, int experts_per_token, bool synced) {
  const int64_t V = f32.info().vocab_size;
  Cache cf = f32.make_cache(static_cast<int64_t>(path.size()));
  Cache cq = quant.make_cache(static_cast<int64_t>(path.size()));
  QuantWalk w;
  std::span<const int32_t> feed = prompt;
  for (size_t pos = prompt.size(); pos <= path.size(); ++pos) {
    if (synced) copy_cache(cf, cq);
    TraceRecorder tf, tq;
    f32.set_tracer(&tf);
    quant.set_tracer(&tq);
    const Tensor lf = f32.forward(feed, cf, Logits::Last);
    const std::vector<float> f(lf.ptr<float>(), lf.ptr<float>() + V);
    const Tensor lq = quant.forward(feed, cq, Logits::Last);
    f32.set_tracer(nullptr);
    quant.set_tracer(nullptr);
    const RoutingCheck routing = compare_routing(tf, tq, experts_per_token);
    EXPECT_EQ(routing.wide_flips, 0) << dtype_name(dt) << " changed experts at a clear router margin, position " << pos;
    w.flips += routing.flips;
    w.flip_steps += routing.flips > 0;
    double err = 0.0, scale = 0.0;
    for (int64_t i = 0; i < V; ++i) {
      EXPECT_TRUE(std::isfinite(lq.ptr<float>()[i])) << dtype_name(dt) << " logit " << i << " at position " << pos;
      err = std::max(err, std::abs(double{lq.ptr<float>()[i]} - f[static_cast<size_t>(i)]));
      scale = std::max(scale, std::abs(double{f[static_cast<size_t>(i)]}));
    }
    const auto top = static_cast<size_t>(std::max_element(f.begin(), f.end()) - f.begin());
    const auto qtop = static_cast<size_t>(std::max_element(lq.ptr<float>(), lq.ptr<float>() + V) - lq.ptr<float>());
    float second = -INFINITY;
    for (size_t i = 0; i < f.size(); ++i)
      if (i != top) second = std::max(second, f[i]);
    ++w.steps;
    w.agree += qtop == top;
    w.worst = std::max(w.worst, err);
    if (routing.flips == 0) w.worst_rel = std::max(w.worst_rel, err / std::max(scale, 1e-30));
    if (dt == DType::Q8_0 && f[top] - second > 2 * err) {
      EXPECT_EQ(qtop, top) << "Q8_0 top-1 at position " << pos;
    }
    if (pos == path.size()) break;
    feed = std::span<const int32_t>(&path[pos], 1);
  }
  return w;
}

// Quantized weights (--dtype q8_0 / q4_0) against the F32 model along the golden greedy path.
// Asserted for Q8_0: each step's own quantization noise (the synced walk) stays within 8% of
// the step's largest |logit| (measured 1.5-4.9% on the fixtures and stories260K), except at
// a step whose MoE routing flipped at a near-tie (a discrete jump, checked by RoutingCheck);
// and in both walks the F32 top-1 wherever its margin is clear. The free-running walk's error
// is printed, not bounded: it includes noise carried in the caches, which a recurrent state
// amplifies (granite-hybrid-moe-rope-tiny: 8.7% after 15 steps from 3% per step). Q4_0 is
// measured and printed, asserted only to stay finite and to flip routing only at near-ties.
TEST_P(Fixture, QuantizedWeightsStayCloseToF32) {
  const std::vector<int32_t> path = ids("greedy_ids");
  const int experts_per_token = read_json_file(dir_ + "/config.json").value("num_experts_per_tok", 0);
  for (DType dt : {DType::Q8_0, DType::Q4_0}) {
    LoadOptions load;
    load.weight_dtype = dt;
    const std::unique_ptr<Model> q = load_model(dir_, load);
    const QuantWalk step = walk_quantized(*model_, *q, dt, prompt_, path, experts_per_token, true);
    const QuantWalk run = walk_quantized(*model_, *q, dt, prompt_, path, experts_per_token, false);
    std::printf("[ quant    ] %s %s: per step (F32 caches) max abs logit error %.3g, %.2f%% of max |logit|; "
                "free-running %.3g, %.2f%% on steps without a routing flip; top-1 %d/%d; MoE rows flipped at near-ties %d\n",
                GetParam().c_str(), std::string(dtype_name(dt)).c_str(), step.worst, 100 * step.worst_rel,
                run.worst, 100 * run.worst_rel, run.agree, run.steps, run.flips);
    if (dt == DType::Q8_0) {
      EXPECT_LT(step.flip_steps, step.steps) << "Q8_0 flipped MoE routing at every step";
      EXPECT_LE(step.worst_rel, 0.08) << "Q8_0 logits far from F32";
    }
  }
}

// An F16 KV cache (--kv-dtype f16; the default under quantized weights) beside the F32 model
// along the golden greedy path: its only rounding is the cache's (2^-11 relative per value).
TEST_P(Fixture, F16KvCacheStaysCloseToF32) {
  const std::vector<int32_t> path = ids("greedy_ids");
  const int experts_per_token = read_json_file(dir_ + "/config.json").value("num_experts_per_tok", 0);
  LoadOptions load;
  load.kv_dtype = DType::F16;
  const std::unique_ptr<Model> half = load_model(dir_, load);
  ASSERT_EQ(half->info().kv_dtype, DType::F16);
  const Cache cache = half->make_cache(4);
  for (const LayerCache& l : cache.layers) {
    if (!l.k.empty()) {
      EXPECT_EQ(l.k.dtype, DType::F16);
    }
  }
  const QuantWalk run = walk_quantized(*model_, *half, DType::F16, prompt_, path, experts_per_token, false);
  std::printf("[ kv f16   ] %s: free-running max abs logit error %.3g, %.3f%% of max |logit|; top-1 %d/%d\n",
              GetParam().c_str(), run.worst, 100 * run.worst_rel, run.agree, run.steps);
  EXPECT_LE(run.worst_rel, 0.01) << "F16 KV cache logits far from F32";
  EXPECT_EQ(run.agree, run.steps) << "F16 KV cache changed the greedy path";
}

// WeightLoader::stack: one matrix [q | k | v] (biases likewise) where the loader writes the
// weights into new memory anyway, the parts apart where they are read in place from the files.
TEST(WeightLoader, StacksOnlyWhereItWritesNewMemory) {
  const std::string dir = test::testdata_path("fixtures/qwen2-tiny");
  if (dir.empty()) {
    if (test::testdata_required()) FAIL() << "missing test data fixtures/qwen2-tiny";
    GTEST_SKIP() << "test data not found";
  }
  const nlohmann::json config = read_json_file(dir + "/config.json");
  const int64_t D = config.at("hidden_size"), heads = config.at("num_attention_heads");
  const int64_t kv_dim = D / heads * config.at("num_key_value_heads").get<int64_t>();
  const std::string a = "layers.0.self_attn.";
  const std::vector<std::string> names = {a + "q_proj", a + "k_proj", a + "v_proj"};
  const std::vector<int64_t> rows = {D, kv_dim, kv_dim};
  const auto total = static_cast<size_t>(D + 2 * kv_dim);
  auto load = [&](LoadMode files_mode, LoadMode mode, std::optional<DType> dtype) {
    const WeightFiles files = WeightFiles::open(dir, files_mode);
    LoadOptions options;
    options.mode = mode;
    options.weight_dtype = dtype;
    WeightLoader loader(files, options, {"model.", ""});
    const MatrixStack s = loader.stack(names, rows, D, true);
    std::vector<std::vector<char>> out;  // the bytes of the weights, then of the biases
    for (const auto* part : {&s.w, &s.b}) {
      std::vector<char> v;
      for (const Tensor& t : *part) v.insert(v.end(), t.ptr<char>(), t.ptr<char>() + t.nbytes());
      out.push_back(std::move(v));
    }
    return std::make_pair(s.w.size(), out);
  };
  const DType stored = stored_matrix_dtype(dir);
  const auto [apart, want] = load(LoadMode::Copy, LoadMode::Copy, {});  // read in place
  EXPECT_EQ(apart, 3u);
  EXPECT_EQ(want[0].size(), dtype_bytes(stored, static_cast<int64_t>(total) * D));
  EXPECT_EQ(want[1].size(), total * sizeof(float));
  EXPECT_EQ(load(LoadMode::Mmap, LoadMode::Mmap, {}).first, 3u);      // --mmap
  EXPECT_EQ(load(LoadMode::Mmap, LoadMode::Mmap, stored).first, 3u);  // --mmap --dtype as stored
  const auto [stacked, got] = load(LoadMode::Mmap, LoadMode::Copy, stored);  // copied out of the map
  EXPECT_EQ(stacked, 1u);
  EXPECT_EQ(got, want);
  const auto [converted, f32] = load(LoadMode::Copy, LoadMode::Copy, DType::F32);  // --dtype f32
  EXPECT_EQ(converted, stored == DType::F32 ? 3u : 1u);
  EXPECT_EQ(f32[0].size(), total * static_cast<size_t>(D) * sizeof(float));
  EXPECT_EQ(f32[1], want[1]);
}

// Random weights (bench --shape) are stacked too, with the values matrix() gives each part.
TEST(WeightLoader, StacksRandomWeightsWithTheValuesOfEachPart) {
  const WeightFiles none;
  LoadOptions options;
  options.random_weights = true;
  options.weight_dtype = DType::BF16;
  WeightLoader stacking(none, options), apart(none, options);
  const std::vector<std::string> names = {"mlp.gate_proj", "mlp.up_proj"};
  const MatrixStack s = stacking.stack(names, {48, 80}, 32, true);
  ASSERT_EQ(s.w.size(), 1u);
  ASSERT_EQ(s.w[0].rows(), 128);
  EXPECT_EQ(s.w[0].dtype, DType::BF16);
  std::vector<char> want;
  for (size_t i = 0; i < names.size(); ++i) {
    const Tensor part = apart.matrix(names[i] + ".weight", i ? 80 : 48, 32);
    want.insert(want.end(), part.ptr<char>(), part.ptr<char>() + part.nbytes());
  }
  EXPECT_EQ(std::vector<char>(s.w[0].ptr<char>(), s.w[0].ptr<char>() + s.w[0].nbytes()), want);
  ASSERT_EQ(s.b[0].numel(), 128);
  EXPECT_EQ(s.b[0].dtype, DType::F32);
  for (int64_t i = 0; i < 128; ++i) EXPECT_EQ(s.b[0].ptr<float>()[i], 0.0f) << i;  // biases are 0
}

// GPT-2's Conv1D matrices, stored [in, out], come out [out, in]: every element in its place, on
// sizes that are not multiples of the transpose's 16-column bands, stored as F32 and as BF16,
// kept as stored or converted (--dtype f16).
TEST(WeightLoader, TransposesConv1DMatrices) {
  const TempDir tmp("purellm_transpose");
  const fs::path& dir = tmp.path();
  const int64_t in = 37, out = 21;
  std::vector<float> v(static_cast<size_t>(in * out));
  for (size_t i = 0; i < v.size(); ++i)  // odd m 2^k: distinct, and exact in BF16 and F16 (7 bits)
    v[i] = std::ldexp(static_cast<float>(2 * static_cast<int>(i % 128) - 127), static_cast<int>(i / 128));
  std::vector<uint16_t> v16(v.size());
  for (size_t i = 0; i < v.size(); ++i) v16[i] = f32_to_bf16(v[i]);
  SafetensorsWriter writer;
  writer.add("f32.weight", DType::F32, {in, out}, v.data());
  writer.add("bf16.weight", DType::BF16, {in, out}, v16.data());
  writer.write((dir / "model.safetensors").string());
  const WeightFiles files = WeightFiles::open(dir.string(), LoadMode::Mmap);
  for (const std::optional<DType> dtype : {std::optional<DType>{}, std::optional<DType>{DType::F16}})
    for (const auto& [name, stored] :
         {std::pair{"f32.weight", DType::F32}, std::pair{"bf16.weight", DType::BF16}}) {
      LoadOptions options;
      options.weight_dtype = dtype;
      WeightLoader loader(files, options);
      const Tensor t = loader.matrix_transposed(name, out, in);
      ASSERT_EQ(t.rows(), out);
      ASSERT_EQ(t.cols(), in);
      ASSERT_EQ(t.dtype, dtype.value_or(stored)) << name;
      std::vector<float> row(static_cast<size_t>(in));
      for (int64_t r = 0; r < out; ++r) {
        ref::weight_row_f32(t, r, row.data());
        for (int64_t c = 0; c < in; ++c)
          ASSERT_EQ(row[static_cast<size_t>(c)], v[static_cast<size_t>(c * out + r)])
              << name << " at " << r << ", " << c;
      }
    }
}

// Weights converted at load from or to F16 give exactly what the scalar f16_to_f32 /
// f32_to_f16 give: F32 -> F16 with ties to even, subnormals, values that overflow to inf, NaN,
// and rows whose length leaves a SIMD tail; F16 -> F32 for every one of the 65536 patterns.
TEST(WeightLoader, ConvertsF16AsTheScalarReference) {
  const TempDir tmp("purellm_f16");
  const int64_t rows = 5, cols = 37;
  std::vector<float> v(static_cast<size_t>(rows * cols));
  // Ties between two F16 values (even below, even above, between subnormals), the largest F16,
  // the first value that rounds to inf, values that flush to 0, NaN; the rest 24-bit mantissas.
  const float special[] = {1.0f + 0x1p-11f, 1.0f + 0x3p-11f, 0x1p-25f, 0x3p-25f, 65504.0f, 65520.0f,
                           -1e-8f, std::nanf(""), -0.0f};
  uint32_t state = 12345;
  for (size_t i = 0; i < v.size(); ++i) {
    state = state * 1664525u + 1013904223u;
    const int mantissa = static_cast<int>(state >> 8) - (1 << 23);  // 24 bits with the sign
    v[i] = i % 4 == 0 ? special[i / 4 % std::size(special)]
                      : std::ldexp(static_cast<float>(mantissa), static_cast<int>(state % 32) - 45);
  }
  std::vector<uint16_t> every(65536);
  for (size_t i = 0; i < every.size(); ++i) every[i] = static_cast<uint16_t>(i);
  SafetensorsWriter writer;
  writer.add("w.weight", DType::F32, {rows, cols}, v.data());
  writer.add("h.weight", DType::F16, {256, 256}, every.data());
  writer.write((tmp.path() / "model.safetensors").string());
  const WeightFiles files = WeightFiles::open(tmp.str(), LoadMode::Mmap);
  LoadOptions options;
  options.weight_dtype = DType::F16;
  WeightLoader loader(files, options);
  const Tensor t = loader.matrix("w.weight", rows, cols);
  ASSERT_EQ(t.dtype, DType::F16);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      ASSERT_EQ(t.row<uint16_t>(r)[c], f32_to_f16(v[static_cast<size_t>(r * cols + c)]))
          << "at " << r << ", " << c << ": " << v[static_cast<size_t>(r * cols + c)];
  options.weight_dtype = DType::F32;
  WeightLoader to_f32(files, options);
  const Tensor h = to_f32.matrix("h.weight", 256, 256);
  ASSERT_EQ(h.dtype, DType::F32);
  for (size_t i = 0; i < every.size(); ++i) {
    const float want = f16_to_f32(every[i]), got = h.ptr<float>()[i];
    if (std::isnan(want)) {  // F16C quiets a signalling NaN; a NaN stays a NaN
      ASSERT_TRUE(std::isnan(got)) << "F16 pattern " << i;
    } else {
      ASSERT_EQ(std::memcmp(&got, &want, sizeof(float)), 0) << "F16 pattern " << i;  // -0 too
    }
  }
}

// Resident memory of this process, and the most it has held since reset_peak_resident() (VmHWM).
size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  size_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}
size_t peak_resident_bytes() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  return 0;
}
void reset_peak_resident() { std::ofstream("/proc/self/clear_refs") << "5"; }

using TensorShapes = std::vector<std::pair<std::string, std::vector<int64_t>>>;

// A checkpoint folder: config.json and the named F32 tensors (small values, not all zero).
void write_checkpoint(const fs::path& dir, const nlohmann::json& config, const TensorShapes& tensors) {
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << config;
  SafetensorsWriter writer;
  for (const auto& [name, shape] : tensors) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = static_cast<float>(i % 97 - 48) * 1e-3f;
    writer.add(name, DType::F32, shape, v.data());
  }
  writer.write((dir / "model.safetensors").string());
}

// GPT-2, D wide: matrices stored as Conv1D [in, out], as openai-community/gpt2 stores them.
TensorShapes gpt2_tensors(int64_t D, int layers, int64_t vocab, int64_t positions) {
  TensorShapes t = {{"wte.weight", {vocab, D}}, {"wpe.weight", {positions, D}}};
  for (int i = 0; i < layers; ++i) {
    const std::string h = "h." + std::to_string(i) + ".";
    for (const char* norm : {"ln_1", "ln_2"}) {
      t.push_back({h + norm + ".weight", {D}});
      t.push_back({h + norm + ".bias", {D}});
    }
    for (const auto& [name, in, out] : {std::tuple{"attn.c_attn", D, 3 * D}, std::tuple{"attn.c_proj", D, D},
                                        std::tuple{"mlp.c_fc", D, 4 * D}, std::tuple{"mlp.c_proj", 4 * D, D}}) {
      t.push_back({h + name + ".weight", {in, out}});
      t.push_back({h + name + ".bias", {out}});
    }
  }
  t.push_back({"ln_f.weight", {D}});
  t.push_back({"ln_f.bias", {D}});
  return t;
}

// Llama with its own output head (lm_head, loaded last), D wide, F the MLP width.
TensorShapes llama_tensors(int64_t D, int64_t F, int layers, int64_t vocab) {
  TensorShapes t = {{"model.embed_tokens.weight", {vocab, D}}};
  for (int i = 0; i < layers; ++i) {
    const std::string l = "model.layers." + std::to_string(i) + ".";
    for (const char* m : {"q_proj", "k_proj", "v_proj", "o_proj"}) t.push_back({l + "self_attn." + m + ".weight", {D, D}});
    t.push_back({l + "mlp.gate_proj.weight", {F, D}});
    t.push_back({l + "mlp.up_proj.weight", {F, D}});
    t.push_back({l + "mlp.down_proj.weight", {D, F}});
    t.push_back({l + "input_layernorm.weight", {D}});
    t.push_back({l + "post_attention_layernorm.weight", {D}});
  }
  t.push_back({"model.norm.weight", {D}});
  t.push_back({"lm_head.weight", {vocab, D}});
  return t;
}

// The default load holds each weight once, at its peak too. GPT-2's Conv1D matrices are
// transposed at load into new memory: the loader reads them from the mapped file and drops its
// pages, where a copy of the whole file kept the originals beside the transposes (1.4x the
// weights here). A matrix kept as stored is copied out of the map block by block, each block's
// file pages dropped as it is done, where a copy in one piece held it twice for a moment (the
// Llama's 64 MiB head, loaded last: 1.4x).
TEST(LoadModel, HoldsEachWeightOnce) {
  const TempDir tmp("purellm_rss");
  const fs::path dir = tmp.path() / "model";
  const nlohmann::json gpt2 = {{"model_type", "gpt2"}, {"vocab_size", 32768}, {"n_positions", 128}, {"n_embd", 512},
                               {"n_layer", 4}, {"n_head", 8}, {"activation_function", "gelu_new"},
                               {"layer_norm_epsilon", 1e-5}};
  const nlohmann::json llama = {{"model_type", "llama"}, {"vocab_size", 32768}, {"hidden_size", 512},
                                {"intermediate_size", 1536}, {"num_hidden_layers", 2}, {"num_attention_heads", 8},
                                {"num_key_value_heads", 8}, {"max_position_embeddings", 128}, {"rms_norm_eps", 1e-5},
                                {"tie_word_embeddings", false}};
#if defined(__SANITIZE_ADDRESS__)
  const double most = 1.45;  // ASan's shadow memory adds about 0.3x
#else
  const double most = 1.15;
#endif
  for (const auto& [config, tensors] : {std::pair{gpt2, gpt2_tensors(512, 4, 32768, 128)},  // 115 MB
                                        std::pair{llama, llama_tensors(512, 1536, 2, 32768)}}) {  // 155 MB
    const std::string type = config.at("model_type");
    write_checkpoint(dir, config, tensors);
    const auto weights = static_cast<double>(WeightFiles::open(dir.string(), LoadMode::Mmap).total_bytes());
    reset_peak_resident();
    const size_t before = resident_bytes();
    ASSERT_LT(peak_resident_bytes(), before + (size_t{8} << 20)) << "VmHWM was not reset through /proc/self/clear_refs";
    auto model = load_model(dir.string());
    const auto grew = static_cast<double>(resident_bytes() - before);
    const auto peak = static_cast<double>(peak_resident_bytes() - before);
    EXPECT_LT(grew, most * weights) << type << ": resident memory grew " << grew / weights << "x the weights";
    EXPECT_LT(peak, most * weights) << type << ": resident memory peaked at " << peak / weights << "x the weights";
    Cache cache = model->make_cache(4);
    const std::vector<int32_t> prompt = {1, 2, 3};
    const Tensor logits = model->forward(prompt, cache, Logits::Last);
    EXPECT_TRUE(std::all_of(logits.ptr<float>(), logits.ptr<float>() + logits.numel(), [](float x) { return std::isfinite(x); }))
        << type;
    model.reset();
    fs::remove_all(dir);
  }
}

INSTANTIATE_TEST_SUITE_P(Goldens, Fixture, ::testing::ValuesIn(fixture_names()),
                         [](const auto& info) {
                           std::string n = fs::path(info.param).filename().string();
                           std::replace_if(n.begin(), n.end(), [](char c) { return !std::isalnum(static_cast<unsigned char>(c)); }, '_');
                           return n;
                         });

}  // namespace
