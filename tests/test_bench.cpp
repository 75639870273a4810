// The bench app: --json rows on the real tiny model and on a random-weight shape (a fixture's
// config.json), every documented key present and the numbers sensible.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "app_runner.hpp"
#include "testdata.hpp"

namespace {

std::vector<nlohmann::json> rows(const std::string& out) {
  std::vector<nlohmann::json> r;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) r.push_back(nlohmann::json::parse(line));
  return r;
}

void check_row(const nlohmann::json& j) {
  for (const char* key : {"shape", "dtype", "threads", "prefill_tokens", "prefill_tok_s", "decode_tokens", "decode_tok_s",
                          "weight_bytes_per_token", "decode_gb_s", "bandwidth_gb_s", "pct_bandwidth",
                          "prefill_gflop_s", "fma_gflop_s", "pct_fma", "peak_rss_bytes", "kv_dtype"})
    EXPECT_TRUE(j.contains(key)) << key << " missing in " << j.dump();
  EXPECT_GT(j["prefill_tok_s"].get<double>(), 0.0) << j.dump();
  EXPECT_GT(j["decode_tok_s"].get<double>(), 0.0) << j.dump();
  EXPECT_GT(j["weight_bytes_per_token"].get<double>(), 0.0) << j.dump();
  EXPECT_GT(j["peak_rss_bytes"].get<double>(), 1e6) << j.dump();
  EXPECT_NEAR(j["decode_gb_s"].get<double>(),
              j["decode_tok_s"].get<double>() * j["weight_bytes_per_token"].get<double>() / 1e9, 1e-3) << j.dump();
  // The machine's limits were measured, and the percentages are shares of them.
  EXPECT_GT(j["bandwidth_gb_s"].get<double>(), 0.1) << j.dump();
  EXPECT_GT(j["fma_gflop_s"].get<double>(), 0.1) << j.dump();
  // (pct_fma has 2 decimals; the GFLOP/s 6 significant digits, as a debug build's are small)
  EXPECT_NEAR(j["pct_fma"].get<double>(), 100.0 * j["prefill_gflop_s"].get<double>() / j["fma_gflop_s"].get<double>(),
              0.01 + 0.01 * j["pct_fma"].get<double>()) << j.dump();
}

TEST(Bench, JsonRowsForAModelDir) {
  REQUIRE_TESTDATA(dir, "models/stories260K");
  const auto r = purellm::test::run_app(PURELLM_BIN_DIR, "bench", "-m " + dir + " -p 8 -n 4 -t 1 --dtype f32,q8_0,q4_0 -r 1 --json");
  ASSERT_EQ(r.status, 0) << r.err;
  const auto js = rows(r.out);
  ASSERT_EQ(js.size(), 3u) << r.out;
  for (const auto& j : js) check_row(j);
  EXPECT_EQ(js[0]["shape"], "stories260K");
  EXPECT_EQ(js[1]["dtype"], "q8_0");
  // The KV cache is F16 by default under quantized weights only.
  EXPECT_EQ(js[0]["kv_dtype"], "F32");
  EXPECT_EQ(js[1]["kv_dtype"], "F16");
  EXPECT_EQ(js[2]["kv_dtype"], "F16");
  EXPECT_EQ(js[0]["prefill_tokens"], 8);
  EXPECT_EQ(js[0]["decode_tokens"], 4);
  // Quantized weights are fewer bytes per token.
  EXPECT_LT(js[1]["weight_bytes_per_token"].get<double>(), js[0]["weight_bytes_per_token"].get<double>());
  EXPECT_LT(js[2]["weight_bytes_per_token"].get<double>(), js[1]["weight_bytes_per_token"].get<double>());
}

TEST(Bench, RandomWeightShapeAndMarkdownTable) {
  REQUIRE_TESTDATA(dir, "fixtures/llama-tiny");
  const auto j = purellm::test::run_app(PURELLM_BIN_DIR, "bench", "--shape " + dir + "/config.json -p 4 -n 2 -t 1,2 -r 1 --json");
  ASSERT_EQ(j.status, 0) << j.err;
  const auto js = rows(j.out);
  ASSERT_EQ(js.size(), 2u) << j.out;
  for (const auto& row : js) check_row(row);
  EXPECT_EQ(js[1]["threads"], 2);
  const auto md = purellm::test::run_app(PURELLM_BIN_DIR, "bench", "--shape " + dir + "/config.json -p 4 -n 2 -t 1 -r 1");
  ASSERT_EQ(md.status, 0) << md.err;
  EXPECT_NE(md.out.find("| model | dtype | threads | prefill tok/s | decode tok/s | decode GB/s | % of bw | prefill GFLOP/s | % of FMA |"), std::string::npos) << md.out;
  const auto bad = purellm::test::run_app(PURELLM_BIN_DIR, "bench", "--shape " + dir + "/config.json --dtype q9");
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.err.find("unknown dtype"), std::string::npos) << bad.err;
  // --kv-dtype: chosen for every row, said in the table; anything but f32 / f16 is refused.
  const auto kv = purellm::test::run_app(PURELLM_BIN_DIR, "bench", "--shape " + dir + "/config.json -p 4 -n 2 -t 1 -r 1 --kv-dtype f16");
  ASSERT_EQ(kv.status, 0) << kv.err;
  EXPECT_NE(kv.out.find("| stored, kv f16 | 1 |"), std::string::npos) << kv.out;
  const auto bad_kv = purellm::test::run_app(PURELLM_BIN_DIR, "bench", "--shape " + dir + "/config.json --kv-dtype q8_0");
  EXPECT_EQ(bad_kv.status, 1);
  EXPECT_NE(bad_kv.err.find("--kv-dtype: \"q8_0\" is not a KV cache dtype (f32, f16)"), std::string::npos) << bad_kv.err;
}

}  // namespace
