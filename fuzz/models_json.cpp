// Fuzz target: models.json, the alias registry ask reads to turn `-m gpt2` into a folder. The
// input is the registry ($PURELLM_MODELS_JSON points at it); a few aliases are resolved
// against an empty models folder, so each either is unknown or not downloaded: both are
// std::runtime_error with a message, never anything else.
#include <cstdlib>
#include <filesystem>

#include "apps/app_common.hpp"
#include "fuzz/fuzz_util.hpp"

using namespace purellm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = [] {
    const std::string p = fuzz::scratch_dir() + "/models.json";
    std::filesystem::create_directories(fuzz::scratch_dir() + "/models");
    setenv("PURELLM_MODELS_JSON", p.c_str(), 1);
    setenv("PURELLM_MODELS", (fuzz::scratch_dir() + "/models").c_str(), 1);
    return p;
  }();
  fuzz::write_file(path, fuzz::as_text(data, size));
  for (const char* alias : {"gpt2", "stories260K", "", "a/b"}) {
    try {
      app::resolve_model(alias);
      FUZZ_CHECK(!"an alias resolved to a model that is not downloaded");
    } catch (const std::runtime_error&) {
    }
  }
  return 0;
}
