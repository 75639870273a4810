// Goldens for model tests: tensors that HF transformers computed, stored F32 / I64 in a
// fixture's golden.safetensors, read into plain vectors; and a comparison that says how far
// off a result is (max abs diff, first index over tolerance), not just that it is.
//
//   const WeightFiles goldens = open_goldens(fixture_dir);
//   const Golden<float> logits = golden_f32(goldens, "logits");  // shape [1, T, V]
//   expect_close(my_logits, logits.values, 1e-4f, "llama-tiny logits");
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "tensor/safetensors.hpp"

namespace purellm::test {

template <class T>
struct Golden {
  std::vector<int64_t> shape;
  std::vector<T> values;  // row-major, numel of shape
};

// `path`: a fixture folder (holding golden.safetensors) or a golden.safetensors file.
inline WeightFiles open_goldens(const std::string& path) {
  std::filesystem::path p(path);
  if (std::filesystem::is_directory(p)) p /= "golden.safetensors";
  return WeightFiles::open(p.string(), LoadMode::Copy);
}

// Golden tensor `name` as values of T (float for F32, int64_t for I64); a dtype that does
// not match T is an error, not a conversion.
template <class T>
Golden<T> read_golden(const WeightFiles& goldens, std::string_view name) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, int64_t>);
  constexpr DType want = std::is_same_v<T, float> ? DType::F32 : DType::I64;
  const TensorInfo& info = goldens.info(name);
  if (info.dtype != want)
    throw std::runtime_error(goldens.source() + ": golden \"" + std::string(name) + "\" is " +
                             std::string(dtype_name(info.dtype)) + ", expected " +
                             std::string(dtype_name(want)));
  const Tensor t = goldens.get(name);
  Golden<T> g{info.shape, std::vector<T>(static_cast<size_t>(t.numel()))};
  if (t.nbytes()) std::memcpy(g.values.data(), t.data, t.nbytes());
  return g;
}

inline Golden<float> golden_f32(const WeightFiles& goldens, std::string_view name) {
  return read_golden<float>(goldens, name);
}
inline Golden<int64_t> golden_i64(const WeightFiles& goldens, std::string_view name) {
  return read_golden<int64_t>(goldens, name);
}

// Fails (without stopping the test) unless |actual[i] - expected[i]| <= atol everywhere; a
// NaN on either side counts as over. The message gives the max abs diff, the first index
// over tolerance and how many are over. Returns whether it passed.
inline bool expect_close(std::span<const float> actual, std::span<const float> expected,
                         float atol, const std::string& what) {
  if (actual.size() != expected.size()) {
    ADD_FAILURE() << what << ": " << actual.size() << " values, expected " << expected.size();
    return false;
  }
  double max_diff = 0;
  size_t first_over = actual.size(), over = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double diff = std::fabs(double(actual[i]) - double(expected[i]));
    if (!(diff <= atol)) {  // also true for NaN
      if (over++ == 0) first_over = i;
      if (std::isnan(diff)) max_diff = diff;
    }
    if (diff > max_diff) max_diff = diff;
  }
  if (over == 0) return true;
  ADD_FAILURE() << what << ": max abs diff " << max_diff << " > atol " << atol << "; " << over
                << " of " << actual.size() << " values over, first at [" << first_over
                << "]: actual " << actual[first_over] << ", expected " << expected[first_over];
  return false;
}

}  // namespace purellm::test
