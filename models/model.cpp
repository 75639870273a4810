#include "models/model.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace purellm {

// ---- Cache -------------------------------------------------------------------------------

namespace {

// Bytes of memory the kernel says can be allocated without swapping (MemAvailable), or
// nullopt where /proc/meminfo does not say.
std::optional<uint64_t> available_memory() {
  std::ifstream in("/proc/meminfo");
  std::string key, unit;
  uint64_t kib = 0;
  while (in >> key >> kib) {
    if (key == "MemAvailable:") return kib * 1024;
    std::getline(in, unit);
  }
  return std::nullopt;
}

std::string gigabytes(uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f GB", static_cast<double>(bytes) / 1e9);
  return text;
}

}  // namespace

void Cache::check_fits(uint64_t bytes, const std::string& what) const {
  if (backend_->device() != Device::CPU) return;  // device memory: the backend's alloc reports it
  const std::optional<uint64_t> available = available_memory();
  if (!available || bytes <= *available) return;
  throw std::runtime_error(what + " needs " + gigabytes(bytes) + " but only " + gigabytes(*available) +
                           " of memory is available: use a shorter context (ask -c N)");
}

Tensor Cache::alloc(std::initializer_list<int64_t> shape, DType dtype) {
  uint64_t bytes = dtype_bytes(dtype, 1);
  for (int64_t d : shape)
    if (d < 0 || __builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes)) bytes = UINT64_MAX;
  check_fits(bytes, "a cache tensor");
  std::shared_ptr<void> memory;
  Tensor t = backend_->alloc_tensor(dtype, shape, memory);
  bytes_ += t.nbytes();
  memory_.push_back(std::move(memory));
  return t;
}

void Cache::reset() {
  n_past_ = 0;
  // Attention K/V need no clearing (positions >= n_past are never read); recurrent state does.
  for (LayerCache& l : layers)
    for (const Tensor* t : {&l.conv, &l.ssm})
      if (!t->empty()) backend_->scale(t->reshape({t->rows(), t->cols()}), t->reshape({t->rows(), t->cols()}), 0.0f);
}

int64_t PlannedTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Tensor Model::project_to_vocab(const Tensor&) {
  throw std::runtime_error(info().architecture + ": this model file does not implement project_to_vocab (logit lens)");
}

// ---- registry ----------------------------------------------------------------------------

namespace {

struct Entry {
  std::string name;
  std::vector<std::string> model_types, architectures;
  ModelFactory factory;
};

std::vector<Entry>& registry() {
  static std::vector<Entry> entries;
  return entries;
}

}  // namespace

ModelRegistration::ModelRegistration(std::string name, std::vector<std::string> model_types,
                                     std::vector<std::string> architectures, ModelFactory factory) {
  registry().push_back({std::move(name), std::move(model_types), std::move(architectures), std::move(factory)});
}

std::vector<std::string> supported_architectures() {
  std::vector<std::string> out;
  for (const Entry& e : registry()) {
    std::string s = e.name + " (model_type";
    for (size_t i = 0; i < e.model_types.size(); ++i) s += (i ? ", " : " ") + e.model_types[i];
    for (size_t i = 0; i < e.architectures.size(); ++i) s += (i ? ", " : "; ") + e.architectures[i];
    out.push_back(s + ")");
  }
  std::sort(out.begin(), out.end());
  return out;
}

ModelFactory find_model(const nlohmann::json& config) {
  auto contains = [](const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  };
  std::string model_type = config.contains("model_type") && config["model_type"].is_string()
                               ? config["model_type"].get<std::string>() : "";
  for (const Entry& e : registry())
    if (!model_type.empty() && contains(e.model_types, model_type)) return e.factory;
  std::string archs;
  if (config.contains("architectures") && config["architectures"].is_array()) {
    for (const auto& a : config["architectures"]) {
      if (!a.is_string()) continue;
      archs += (archs.empty() ? "" : ", ") + a.get<std::string>();
      for (const Entry& e : registry())
        if (contains(e.architectures, a.get<std::string>())) return e.factory;
    }
  }
  std::string msg = "config.json: unsupported architecture (model_type \"" + model_type + "\"";
  if (!archs.empty()) msg += ", architectures " + archs;
  msg += "). Supported:";
  for (const auto& s : supported_architectures()) msg += "\n  " + s;
  throw std::runtime_error(msg);
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open (" + std::strerror(errno) + ")");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for 1e400
    throw std::runtime_error(path + ": invalid JSON: " + e.what());
  }
}

std::unique_ptr<Model> load_model(const std::string& dir, const LoadOptions& options) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) throw std::runtime_error(dir + ": model folder not found");
  const std::string config_path = (fs::path(dir) / "config.json").string();
  if (!fs::exists(config_path)) throw std::runtime_error(dir + ": no config.json in the model folder");
  const nlohmann::json config = read_json_file(config_path);
  if (!config.is_object()) throw std::runtime_error(config_path + ": expected a JSON object");
  ModelFactory factory = find_model(config);
  // The files are mapped, never copied whole: the loader reads each tensor once from the map,
  // keeps it in place (--mmap) or copies it into anonymous memory (the default, LoadMode::Copy),
  // writes the ones it transforms (--dtype, GPT-2's Conv1D transpose, fused qkv reordering,
  // q/k/v stacking) straight into their new memory, and drops the tensor's file pages once done.
  // So memory holds each weight once: a GPT-2-shaped F32 checkpoint, whose original Conv1D
  // matrices a whole-file copy kept beside their transposes, peaks at 555 MB, not 894 (bench -m).
  auto weights = std::make_shared<const WeightFiles>(WeightFiles::open(dir, LoadMode::Mmap));
  std::unique_ptr<Model> model = factory(config, *weights, options);
  model->keep_weight_files(std::move(weights));
  return model;
}

std::unique_ptr<Model> random_model(const nlohmann::json& config, LoadOptions options) {
  options.random_weights = true;
  const WeightFiles none;
  return find_model(config)(config, none, options);
}

}  // namespace purellm
