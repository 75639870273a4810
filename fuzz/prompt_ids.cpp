// Fuzz target: the --prompt-ids parser and the strict number parsers of the app flags. The
// first 4 input bytes give the vocabulary size (1 .. 2^24), the rest is the flag's text.
// Accepted ids are in [0, vocab) and there is one per comma-separated item; a refused text
// gets std::runtime_error.
#include <algorithm>
#include <cmath>

#include "apps/app_common.hpp"
#include "fuzz/fuzz_util.hpp"

using namespace purellm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  const int64_t vocab = int64_t(data[0] | data[1] << 8 | data[2] << 16) + 1;
  const std::string_view text = fuzz::as_text(data + 4, size - 4);
  try {
    const std::vector<int32_t> ids = app::parse_prompt_ids(text, vocab);
    FUZZ_CHECK(ids.size() == size_t(std::count(text.begin(), text.end(), ',')) + 1);
    for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < vocab);
  } catch (const std::runtime_error&) {
  }
  try {
    const int64_t v = app::parse_int("-n", text, 0, 1 << 24);
    FUZZ_CHECK(v >= 0 && v <= (1 << 24));
  } catch (const std::runtime_error&) {
  }
  try {
    const double v = app::parse_float("--top-p", text, 1e-6, 1.0);
    FUZZ_CHECK(std::isfinite(v) && v >= 1e-6 && v <= 1.0);
  } catch (const std::runtime_error&) {
  }
  return 0;
}
