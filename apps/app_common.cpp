#include "apps/app_common.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

#include "models/model.hpp"
#include "models/planner.hpp"

namespace purellm::app {

namespace fs = std::filesystem;

namespace {

// The repository root: the nearest ancestor of the working directory or of the executable
// that holds models.json (the binaries live in build/<preset>/bin).
std::optional<fs::path> repo_root() {
  std::vector<fs::path> starts{fs::current_path()};
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) starts.push_back(exe.parent_path());
  for (fs::path p : starts) {
    for (int up = 0; up < 5 && !p.empty(); ++up, p = p.parent_path()) {
      if (fs::exists(p / "models.json")) return p;
      if (p == p.parent_path()) break;
    }
  }
  return std::nullopt;
}

}  // namespace

std::string models_dir() {
  if (const char* env = std::getenv("PURELLM_MODELS"); env && *env) return env;
  if (auto root = repo_root()) return (*root / "models").string();
  return "models";
}

std::vector<std::string> downloaded_models() {
  std::vector<std::string> dirs;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(models_dir(), ec))
    if (e.is_directory() && fs::exists(e.path() / "config.json") && has_weights(e.path().string()))
      dirs.push_back(e.path().string());
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

nlohmann::json load_models_json() {
  if (const char* env = std::getenv("PURELLM_MODELS_JSON"); env && *env) return read_json_file(env);
  if (auto root = repo_root()) return read_json_file((*root / "models.json").string());
  return nullptr;
}

ResolvedModel resolve_model(const std::string& arg) {
  ResolvedModel r;
  if (fs::is_directory(arg)) {
    r.dir = arg;
    return r;
  }
  const nlohmann::json registry = load_models_json();
  if (registry.is_object() && registry.contains(arg)) {
    r.alias = arg;
    r.entry = registry[arg];
    r.dir = (fs::path(models_dir()) / arg).string();
    if (!fs::exists(fs::path(r.dir) / "config.json"))
      throw std::runtime_error("model \"" + arg + "\" is not downloaded (looked in " + r.dir +
                               "). Get it with:\n  python3 models_download.py " + arg);
    return r;
  }
  std::string msg = "model \"" + arg + "\" is neither a folder nor an alias in models.json";
  if (registry.is_object()) {
    msg += ". Known aliases:";
    for (auto it = registry.begin(); it != registry.end(); ++it) msg += " " + it.key();
  }
  throw std::runtime_error(msg);
}

std::vector<int32_t> parse_prompt_ids(std::string_view text, int64_t vocab_size) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    std::string_view item = text.substr(pos, comma - pos);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    int64_t v = -1;
    auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (item.empty() || ec != std::errc() || end != item.data() + item.size())
      throw std::runtime_error("--prompt-ids: \"" + std::string(item) + "\" (item " + std::to_string(ids.size() + 1) +
                               ") is not a token id; expected comma-separated integers like 1,2,3");
    if (v < 0 || v >= vocab_size)
      throw std::runtime_error("--prompt-ids: id " + std::to_string(v) + " is outside the vocabulary [0, " +
                               std::to_string(vocab_size) + ")");
    ids.push_back(static_cast<int32_t>(v));
    pos = comma + 1;
  }
  return ids;
}

uint64_t peak_rss_bytes() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<uint64_t>(ru.ru_maxrss) * 1024;
}

int64_t parse_int(std::string_view flag, std::string_view value, int64_t min, int64_t max) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  if (value.empty() || ec != std::errc() || end != value.data() + value.size())
    throw std::runtime_error(std::string(flag) + ": expected an integer, got \"" + std::string(value) + "\"");
  if (v < min || v > max)
    throw std::runtime_error(std::string(flag) + ": " + std::to_string(v) + " is outside [" + std::to_string(min) +
                             ", " + std::to_string(max) + "]");
  return v;
}

DType parse_weight_dtype(std::string_view value) {
  const std::optional<DType> d = dtype_from_flag(value);
  if (!d) throw std::runtime_error("--dtype: unknown dtype \"" + std::string(value) + "\" (f32, f16, bf16, q8_0, q4_0)");
  return *d;
}

DType parse_kv_dtype(std::string_view value) {
  const std::optional<DType> d = dtype_from_flag(value);
  if (!d || (*d != DType::F32 && *d != DType::F16))
    throw std::runtime_error("--kv-dtype: \"" + std::string(value) + "\" is not a KV cache dtype (f32, f16)");
  return *d;
}

double parse_float(std::string_view flag, std::string_view value, double min, double max) {
  std::string s(value);
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v))
    throw std::runtime_error(std::string(flag) + ": expected a number, got \"" + s + "\"");
  if (v < min || v > max)
    throw std::runtime_error(std::string(flag) + ": " + s + " is outside [" + std::to_string(min) + ", " +
                             std::to_string(max) + "]");
  return v;
}

}  // namespace purellm::app
