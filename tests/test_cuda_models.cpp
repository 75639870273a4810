// Every fixture end to end on a device backend (device_under_test.hpp), loaded with
// LoadOptions::backend as `ask --device cuda` does: the logits of one full forward and of every
// cached decode step within 1e-3 of transformers', and the greedy ids exactly.
// 1e-3 rather than the CPU's 1e-4: the GPU sums in other orders (block reductions, tiles) and
// evaluates expf/erff/tanhf with its own few-ulp approximations, layer after layer.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>

#include "golden.hpp"
#include "models/generate.hpp"
#include "testdata.hpp"
#include "tests/device_under_test.hpp"

using namespace purellm;
namespace fs = std::filesystem;

namespace {

constexpr float kAtol = 1e-3f;

// Decode steps checked per fixture: all of them on a GPU. The emulator (test_cuda_emulated)
// runs each GPU thread as a fiber, about a second per step here, so it checks the first
// PURELLM_TEST_DECODE_STEPS: the prefill's logits and the first cached decode step.
#ifdef PURELLM_TEST_DECODE_STEPS
constexpr size_t kMaxSteps = PURELLM_TEST_DECODE_STEPS;
#else
constexpr size_t kMaxSteps = SIZE_MAX;
#endif

std::vector<std::string> fixture_names() {
  std::vector<std::string> names;
  const std::string root = test::testdata_path("fixtures");
  if (root.empty()) return {"(missing fixtures folder)"};
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory()) names.push_back("fixtures/" + e.path().filename().string());
  names.push_back("models/stories260K");
  std::sort(names.begin(), names.end());
  return names;
}

std::span<const float> values(const Tensor& t) { return {t.ptr<const float>(), static_cast<size_t>(t.numel())}; }

class DeviceFixture : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string why;
    backend_ = test::device_under_test(&why);
    if (!backend_) GTEST_SKIP() << PURELLM_TEST_DEVICE << " backend not available: " << why;
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
    LoadOptions options;
    options.backend = backend_;
    model_ = load_model(dir_, options);
    golden_ = std::make_unique<WeightFiles>(test::open_goldens(dir_));
    const std::vector<int64_t> ids = test::golden_i64(*golden_, "input_ids").values;
    prompt_.assign(ids.begin(), ids.end());
  }
  std::vector<float> floats(const std::string& name) const { return test::golden_f32(*golden_, name).values; }

  Backend* backend_ = nullptr;
  std::string dir_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<WeightFiles> golden_;
  std::vector<int32_t> prompt_;
};

TEST_P(DeviceFixture, LogitsMatchTransformers) {
  Cache cache = model_->make_cache(static_cast<int64_t>(prompt_.size()));
  const Tensor logits = model_->forward(prompt_, cache, Logits::All);
  EXPECT_EQ(logits.device, Device::CPU) << "forward() returns logits on the host";
  test::expect_close(values(logits), floats("logits"), kAtol, "logits on " + backend_->name());
}

TEST_P(DeviceFixture, GreedyDecodeMatchesTransformers) {
  const std::vector<int64_t> expected64 = test::golden_i64(*golden_, "greedy_ids").values;
  const std::vector<float> step_logits = floats("greedy_step_logits");
  const int64_t V = model_->info().vocab_size;
  ASSERT_EQ(step_logits.size(), (expected64.size() - prompt_.size()) * static_cast<size_t>(V));
  const size_t n_new = std::min(expected64.size() - prompt_.size(), kMaxSteps);
  const std::vector<int32_t> expected(expected64.begin(), expected64.begin() + static_cast<std::ptrdiff_t>(prompt_.size() + n_new));

  Cache cache = model_->make_cache(static_cast<int64_t>(expected.size()));
  SamplingOptions greedy;
  greedy.greedy = true;
  Sampler sampler(greedy);
  std::vector<int32_t> ids = prompt_;
  Tensor logits = model_->forward(prompt_, cache, Logits::Last);
  for (size_t step = 0; step < n_new; ++step) {
    const std::vector<float> want(step_logits.begin() + static_cast<std::ptrdiff_t>(step * V),
                                  step_logits.begin() + static_cast<std::ptrdiff_t>((step + 1) * V));
    test::expect_close(values(logits), want, kAtol, "greedy_step_logits[" + std::to_string(step) + "]");
    const int32_t next = sampler.sample({logits.ptr<float>(), static_cast<size_t>(V)}, ids);
    ids.push_back(next);
    if (step + 1 < n_new) logits = model_->forward(std::span<const int32_t>(&next, 1), cache, Logits::Last);
  }
  EXPECT_EQ(ids, expected);
}

INSTANTIATE_TEST_SUITE_P(Device, DeviceFixture, ::testing::ValuesIn(fixture_names()), [](const auto& info) {
  std::string n = fs::path(info.param).filename().string() + "_" + PURELLM_TEST_DEVICE;
  std::replace_if(n.begin(), n.end(), [](char c) { return !std::isalnum(static_cast<unsigned char>(c)); }, '_');
  return n;
});

}  // namespace
