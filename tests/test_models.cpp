// Every fixture whose architecture is registered is checked against its transformers goldens:
//   logits of one full forward (atol 1e-4), every hidden state through the trace hook,
//   the cached decode path (greedy_step_logits), and the greedy ids exactly.
// Fixtures are found by listing the fixtures folder; one whose architecture has no model file
// yet is skipped with that reason printed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>

#include "golden.hpp"
#include "models/generate.hpp"
#include "tensor/cpu/cpu_backend.hpp"
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

// Both load modes give identical logits.
TEST_P(Fixture, MmapAndCopyLoadsAgree) {
  LoadOptions mapped;
  mapped.mode = LoadMode::Mmap;
  auto other = load_model(dir_, mapped);
  Cache c1 = model_->make_cache(static_cast<int64_t>(prompt_.size()));
  Cache c2 = other->make_cache(static_cast<int64_t>(prompt_.size()));
  const Tensor a = model_->forward(prompt_, c1, Logits::All);
  const std::vector<float> av(a.ptr<float>(), a.ptr<float>() + a.numel());
  const Tensor b = other->forward(prompt_, c2, Logits::All);
  test::expect_close(values(b), av, 0.0f, "mmap vs copy logits");
}

// Quantized weights (--dtype q8_0 / q4_0) against the F32 model, along the golden greedy path
// (teacher forced: each step feeds the F32 greedy token): the max abs logit error relative to
// the largest |logit| of the step, and top-1 agreement. Asserted for Q8_0: error <= 8% of the
// logit scale (measured 2-5.3% on the fixtures, 2.0% on stories260K), and the same top-1 token wherever the F32 margin between its best two tokens is
// more than twice the step's error (closer calls may flip: random-weight fixtures have nearly
// flat logits). Q4_0 is measured and printed, asserted only to stay finite.
TEST_P(Fixture, QuantizedWeightsStayCloseToF32) {
  const std::vector<int32_t> path = ids("greedy_ids");
  const int64_t V = model_->info().vocab_size;
  for (DType dt : {DType::Q8_0, DType::Q4_0}) {
    LoadOptions load;
    load.weight_dtype = dt;
    const std::unique_ptr<Model> q = load_model(dir_, load);
    Cache cf = model_->make_cache(static_cast<int64_t>(path.size()));
    Cache cq = q->make_cache(static_cast<int64_t>(path.size()));
    double worst = 0.0, worst_rel = 0.0;
    int agree = 0, steps = 0, clear = 0;
    std::span<const int32_t> feed(prompt_);
    for (size_t pos = prompt_.size(); pos <= path.size(); ++pos) {
      const Tensor lf = model_->forward(feed, cf, Logits::Last);
      const std::vector<float> f(lf.ptr<float>(), lf.ptr<float>() + V);
      const Tensor lq = q->forward(feed, cq, Logits::Last);
      double err = 0.0, scale = 0.0;
      for (int64_t i = 0; i < V; ++i) {
        ASSERT_TRUE(std::isfinite(lq.ptr<float>()[i])) << dtype_name(dt);
        err = std::max(err, std::abs(double{lq.ptr<float>()[i]} - f[static_cast<size_t>(i)]));
        scale = std::max(scale, std::abs(double{f[static_cast<size_t>(i)]}));
      }
      const auto top = static_cast<size_t>(std::max_element(f.begin(), f.end()) - f.begin());
      const auto qtop = std::max_element(lq.ptr<float>(), lq.ptr<float>() + V) - lq.ptr<float>();
      float second = -INFINITY;
      for (size_t i = 0; i < f.size(); ++i)
        if (i != top) second = std::max(second, f[i]);
      ++steps;
      agree += static_cast<size_t>(qtop) == top;
      worst = std::max(worst, err);
      worst_rel = std::max(worst_rel, err / std::max(scale, 1e-30));
      if (dt == DType::Q8_0 && f[top] - second > 2 * err) {
        ++clear;
        EXPECT_EQ(static_cast<size_t>(qtop), top) << "Q8_0 top-1 at position " << pos;
      }
      if (pos == path.size()) break;
      feed = std::span<const int32_t>(&path[pos], 1);
    }
    std::printf("[ quant    ] %s %s: max abs logit error %.3g (%.2f%% of max |logit|), top-1 %d/%d\n",
                GetParam().c_str(), std::string(dtype_name(dt)).c_str(), worst, 100 * worst_rel, agree, steps);
    if (dt == DType::Q8_0) EXPECT_LE(worst_rel, 0.08) << "Q8_0 logits far from F32";
  }
}

INSTANTIATE_TEST_SUITE_P(Goldens, Fixture, ::testing::ValuesIn(fixture_names()),
                         [](const auto& info) {
                           std::string n = fs::path(info.param).filename().string();
                           std::replace_if(n.begin(), n.end(), [](char c) { return !std::isalnum(static_cast<unsigned char>(c)); }, '_');
                           return n;
                         });

}  // namespace
