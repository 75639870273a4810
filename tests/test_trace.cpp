// Learning-mode plumbing: the safetensors writer (read back by our own validating reader),
// the trace recorder, and Model::project_to_vocab (the logit lens) against each model's own
// forward pass on every fixture.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "golden.hpp"
#include "models/trace.hpp"
#include "tensor/safetensors_writer.hpp"
#include "testdata.hpp"

using namespace purellm;
namespace fs = std::filesystem;

namespace {

fs::path temp_file(const std::string& name) {
  return fs::temp_directory_path() / ("purellm_trace_" + name + "_" + std::to_string(::getpid()) + ".safetensors");
}

TEST(SafetensorsWriter, RoundTripsThroughTheReader) {
  const std::vector<float> f = {1.5f, -2.0f, 3.25f, 0.0f, 5.0f, 6.0f};
  const std::vector<int64_t> ids = {7, -1, 1ll << 40};
  const std::vector<uint16_t> bf = {f32_to_bf16(1.0f), f32_to_bf16(-3.0f)};
  std::vector<uint8_t> q8(34, 0);  // one Q8_0 block
  q8[2] = 5;
  SafetensorsWriter w;
  w.add("a.f32", DType::F32, {2, 3}, f.data());
  w.add("b", DType::I64, {3}, ids.data());
  w.add("c", DType::BF16, {1, 2}, bf.data());
  w.add("q", DType::Q8_0, {1, 32}, q8.data());
  w.add("empty", DType::F32, {0, 4}, nullptr);
  w.set_metadata("model", "x");
  const fs::path p = temp_file("roundtrip");
  w.write(p.string());

  const auto file = SafetensorsFile::open(p.string(), LoadMode::Copy);
  EXPECT_EQ(file->tensors().size(), 5u);
  EXPECT_EQ(file->metadata().at("model"), "x");
  const Tensor a = file->tensor(*file->find("a.f32"));
  EXPECT_EQ(a.describe(), "F32[2, 3]");
  EXPECT_TRUE(std::equal(f.begin(), f.end(), a.ptr<float>()));
  EXPECT_TRUE(std::equal(ids.begin(), ids.end(), file->tensor(*file->find("b")).ptr<int64_t>()));
  EXPECT_EQ(bf16_to_f32(file->tensor(*file->find("c")).ptr<uint16_t>()[1]), -3.0f);
  EXPECT_EQ(file->tensor(*file->find("q")).ptr<uint8_t>()[2], 5);
  EXPECT_EQ(file->find("empty")->end - file->find("empty")->begin, 0u);
  // The header is padded so the data starts 8-byte aligned.
  std::ifstream in(p, std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ(n % 8, 0u);
  fs::remove(p);
}

TEST(SafetensorsWriter, RefusesWhatTheFormatCannotHold) {
  SafetensorsWriter w;
  const float v[4] = {};
  w.add("x", DType::F32, {4}, v);
  EXPECT_THROW(w.add("x", DType::F32, {4}, v), std::invalid_argument);            // twice
  EXPECT_THROW(w.add("", DType::F32, {4}, v), std::invalid_argument);             // no name
  EXPECT_THROW(w.add("__metadata__", DType::F32, {4}, v), std::invalid_argument);  // reserved
  EXPECT_THROW(w.add("q", DType::Q4_0, {1, 20}, v), std::invalid_argument);       // not whole blocks
  EXPECT_THROW(w.add("n", DType::F32, {-1}, v), std::invalid_argument);
  try {
    w.write("/nonexistent/dir/t.safetensors");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/t.safetensors"), std::string::npos);
  }
}

TEST(TraceRecorder, CopiesStridedViewsAndKeepsTheFirstRecord) {
  std::vector<float> m = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};  // [3, 4]
  const Tensor full = Tensor::contiguous(m.data(), DType::F32, {3, 4});
  TraceRecorder rec;
  rec.record("qkv", 2, full.cols_view(1, 2));  // [3, 2], row stride 4
  rec.record("qkv", 2, full);                  // ignored: one forward per trace
  rec.record("embed", -1, full.rows_view(1, 1));
  ASSERT_NE(rec.find("qkv.2"), nullptr);
  EXPECT_EQ(rec.find("qkv.2")->shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(rec.find("qkv.2")->values, (std::vector<float>{1, 2, 5, 6, 9, 10}));
  EXPECT_EQ(rec.find("embed")->values, (std::vector<float>{4, 5, 6, 7}));
  EXPECT_EQ(rec.view("qkv.2").describe(), "F32[3, 2]");
  EXPECT_THROW(rec.view("nothing.0"), std::runtime_error);
  EXPECT_FALSE(rec.wants_attention_probs());
  EXPECT_TRUE(TraceRecorder(true).wants_attention_probs());
  std::vector<uint16_t> h(4);
  EXPECT_THROW(rec.record("bf", 0, Tensor::contiguous(h.data(), DType::BF16, {4})), std::runtime_error);
}

// ---- every fixture: tracing changes nothing, the lens of the last layer is the output ------

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

std::vector<float> copy(const Tensor& t) { return {t.ptr<const float>(), t.ptr<const float>() + t.numel()}; }

class TraceFixture : public ::testing::TestWithParam<std::string> {
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
    model_ = load_model(dir_);
    const auto ids = test::golden_i64(test::open_goldens(dir_), "input_ids").values;
    prompt_.assign(ids.begin(), ids.end());
  }
  std::vector<float> logits(Tracer* tracer) {
    model_->set_tracer(tracer);
    Cache cache = model_->make_cache(static_cast<int64_t>(prompt_.size()));
    const std::vector<float> out = copy(model_->forward(prompt_, cache, Logits::All));
    model_->set_tracer(nullptr);
    return out;
  }
  std::string dir_;
  std::unique_ptr<Model> model_;
  std::vector<int32_t> prompt_;
};

TEST_P(TraceFixture, TracingChangesNothingAndTheLastLayerThroughTheHeadIsTheOutput) {
  const std::vector<float> plain = logits(nullptr);
  TraceRecorder rec(/*attention_probs=*/true);
  const std::vector<float> traced = logits(&rec);
  test::expect_close(traced, plain, 0.0f, "logits with and without a tracer");

  const int L = model_->info().n_layers;
  const Tensor last = rec.view(trace_name("layer_out", L - 1));  // [T, D]
  test::expect_close(copy(model_->project_to_vocab(last)), plain, 0.0f, "project_to_vocab(layer_out.L-1)");
  // Every layer's residual projects to finite logits of the right shape.
  for (int l = 0; l < L; ++l) {
    const Tensor lens = model_->project_to_vocab(rec.view(trace_name("layer_out", l)));
    EXPECT_EQ(lens.rows(), static_cast<int64_t>(prompt_.size()));
    EXPECT_EQ(lens.cols(), model_->info().vocab_size);
    EXPECT_TRUE(std::all_of(lens.ptr<float>(), lens.ptr<float>() + lens.numel(), [](float v) { return std::isfinite(v); }));
    // Every attention layer gives its probabilities; a recurrent (Mamba2) layer has none.
    if (rec.find(trace_name("attn_out", l))) {
      ASSERT_NE(rec.find(trace_name("attn_probs", l)), nullptr) << "layer " << l;
    } else {
      EXPECT_EQ(rec.find(trace_name("attn_probs", l)), nullptr) << "layer " << l;
      EXPECT_NE(rec.find(trace_name("ssm_scan", l)), nullptr) << "layer " << l << " is neither attention nor Mamba2";
    }
  }
  int first_attention = 0;  // hybrids may start with a recurrent layer
  while (first_attention + 1 < L && !rec.find(trace_name("attn_probs", first_attention))) ++first_attention;
  const Tensor wrong = rec.view(trace_name("attn_probs", first_attention));  // [H, T, T]: not a residual
  EXPECT_THROW(model_->project_to_vocab(wrong), std::invalid_argument);
}

INSTANTIATE_TEST_SUITE_P(Models, TraceFixture, ::testing::ValuesIn(model_dirs()), [](const auto& info) {
  std::string n = fs::path(info.param).filename().string();
  std::replace_if(n.begin(), n.end(), [](char c) { return !std::isalnum(static_cast<unsigned char>(c)); }, '_');
  return n;
});

}  // namespace
