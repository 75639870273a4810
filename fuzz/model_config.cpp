// Fuzz target: config.json of every registered architecture, through the registry exactly as
// load_model uses it: read_json_file reads it, find_model(config) picks the model file, and
// its factory is called with an empty set of weights. Every factory parses and validates its
// Config (from_json) before it asks for a tensor, so a config that passes validation ends at
// the first weight lookup with SafetensorsError(MissingTensor). A new model file is covered as
// soon as it registers: no hook per file. What this catches: a config value that crashes,
// overflows, or makes the factory allocate memory by the config's numbers before any weight
// is checked (the 2 GB malloc limit of fuzz/run.sh turns that into a finding).
#include "fuzz/fuzz_util.hpp"
#include "models/model.hpp"

using namespace purellm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = fuzz::scratch_dir() + "/config.json";
  static const WeightFiles no_weights;
  fuzz::write_file(path, fuzz::as_text(data, size));
  try {
    const nlohmann::json config = read_json_file(path);  // as load_model reads it
    if (!config.is_object()) return 0;                   // load_model refuses these first
    const ModelFactory factory = find_model(config);
    factory(config, no_weights, LoadOptions{});
  } catch (const SafetensorsError& e) {
    FUZZ_CHECK(e.kind() == SafetensorsError::Kind::MissingTensor);
    return 0;
  } catch (const std::runtime_error&) {  // a config error naming the key
    return 0;
  }
  FUZZ_CHECK(!"a model loaded without weights");
  return 0;
}
