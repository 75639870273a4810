#include "models/planner.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

namespace purellm {

namespace fs = std::filesystem;

namespace {

// A backend that allocates address space but no memory (PROT_NONE reservations: a stray
// read of planned data faults at once instead of reading garbage) and does nothing in its
// ops. It counts the bytes it has handed out and not yet had back.
class PlanBackend final : public Backend {
 public:
  std::string name() const override { return "plan (no memory)"; }
  Device device() const override { return Device::CPU; }

  std::shared_ptr<void> alloc(size_t bytes) override {
    const size_t reserve = std::max<size_t>(bytes, 1);
    void* p = mmap(nullptr, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("planner: cannot reserve " + format_bytes(bytes) + " of address space");
    live_ += bytes;
    auto* live = &live_;
    return std::shared_ptr<void>(p, [reserve, bytes, live](void* q) {
      munmap(q, reserve);
      *live -= bytes;
    });
  }
  uint64_t live_bytes() const { return live_; }

  void upload(const Tensor&, const void*) override {}
  void download(void*, const Tensor&) override {}
  Tensor adopt_weight(const Tensor& host, bool, std::shared_ptr<void>&) override { return host; }
  bool supports(Op, DType) const override { return true; }
  void embed(const Tensor&, const Tensor&, std::span<const int32_t>) override {}
  void matmul(const Tensor&, const Tensor&, const Tensor&, const Tensor&) override {}
  void add(const Tensor&, const Tensor&, const Tensor&) override {}
  void mul(const Tensor&, const Tensor&, const Tensor&) override {}
  void scale(const Tensor&, const Tensor&, float) override {}
  void add_scaled(const Tensor&, const Tensor&, float) override {}
  void copy(const Tensor&, const Tensor&) override {}
  void layernorm(const Tensor&, const Tensor&, const Tensor&, const Tensor&, float) override {}
  void rmsnorm(const Tensor&, const Tensor&, const Tensor&, float) override {}
  void softmax(const Tensor&, const Tensor&) override {}
  void gelu(const Tensor&, const Tensor&) override {}
  void gelu_tanh(const Tensor&, const Tensor&) override {}
  void relu(const Tensor&, const Tensor&) override {}
  void silu(const Tensor&, const Tensor&) override {}
  void silu_mul(const Tensor&, const Tensor&, const Tensor&) override {}
  void rope(const Tensor&, int, int, int, int64_t, const Tensor&, const Tensor&) override {}
  void attention(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const AttentionArgs&) override {}
  int64_t argmax(const Tensor&) override { return 0; }
  void conv1d_causal(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&) override {}
  void ssm_scan(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                const Tensor&, const Tensor&, const Tensor&, const SsmArgs&) override {}

 private:
  uint64_t live_ = 0;
};

DType largest_stored_dtype(const std::vector<PlannedTensor>& tensors) {
  std::map<DType, uint64_t> by_dtype;
  for (const PlannedTensor& t : tensors) by_dtype[t.stored] += dtype_bytes(t.stored, t.numel());
  DType best = DType::F32;
  uint64_t most = 0;
  for (const auto& [dtype, bytes] : by_dtype)
    if (bytes > most) best = dtype, most = bytes;
  return best;
}

}  // namespace

DType config_dtype(const nlohmann::json& config) {
  for (const char* key : {"torch_dtype", "dtype"}) {
    if (!config.contains(key) || config[key].is_null()) continue;
    const auto& v = config[key];
    const std::string name = v.is_string() ? v.get<std::string>() : v.dump();
    if (name == "float32") return DType::F32;
    if (name == "float16") return DType::F16;
    if (name == "bfloat16") return DType::BF16;
    throw std::runtime_error(std::string("config.json: \"") + key + "\" " + name +
                             " is not a weight dtype purellm knows (float32, float16, bfloat16)");
  }
  return DType::F32;
}

ModelPlan plan_model(const nlohmann::json& config, const WeightFiles* weights, const PlanOptions& options) {
  ModelPlan plan;
  PlanBackend backend;
  LoadOptions load;
  load.plan_only = true;
  load.plan_dtype = config_dtype(config);
  load.weight_dtype = options.weight_dtype;
  load.backend = &backend;
  load.record = &plan.tensors;
  const WeightFiles none;
  std::unique_ptr<Model> model = find_model(config)(config, weights ? *weights : none, load);
  plan.info = model->info();
  for (const PlannedTensor& t : plan.tensors) plan.parameters += static_cast<uint64_t>(t.numel());
  plan.stored_dtype = largest_stored_dtype(plan.tensors);

  const int64_t max_context = plan.info.max_context;
  plan.context = options.context > 0 ? std::min(options.context, max_context) : max_context;
  plan.prefill = std::clamp<int64_t>(options.prefill, 1, plan.context);
  // Every cache grows linearly with its positions: two sizes give the slope and the constant.
  const uint64_t one = model->make_cache(1).bytes(), two = model->make_cache(2).bytes();
  plan.cache_bytes_per_token = max_context >= 2 ? two - one : 0;
  plan.cache_fixed_bytes = one - plan.cache_bytes_per_token;

  Cache cache = model->make_cache(plan.context);
  plan.cache_bytes = cache.bytes();
  const uint64_t before = backend.live_bytes();
  const std::vector<int32_t> prompt(static_cast<size_t>(plan.prefill), 0);
  model->forward(prompt, cache, Logits::Last);  // allocates its buffers; the ops do nothing
  plan.activation_bytes = backend.live_bytes() - before;
  return plan;
}

bool has_weights(const std::string& dir) {
  return fs::exists(fs::path(dir) / "model.safetensors") || fs::exists(fs::path(dir) / "model.safetensors.index.json");
}

ModelPlan plan_model_dir(const std::string& dir, const PlanOptions& options) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  if (!fs::exists(config_path)) throw std::runtime_error(dir + ": no config.json in the model folder");
  const nlohmann::json config = read_json_file(config_path);
  if (!has_weights(dir)) return plan_model(config, nullptr, options);
  const WeightFiles files = WeightFiles::open(dir, LoadMode::Mmap);  // headers only are used
  return plan_model(config, &files, options);
}

uint64_t mem_available_bytes(const std::string& meminfo_path) {
  std::ifstream in(meminfo_path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("MemAvailable:", 0) != 0) continue;
    std::istringstream fields(line.substr(13));
    uint64_t kb = 0;
    std::string unit;
    if (fields >> kb >> unit && unit == "kB") return kb * 1024;
  }
  return 0;
}

bool plan_fits(const ModelPlan& plan, uint64_t available) { return plan.total_bytes() + kPlanReserveBytes <= available; }

int64_t largest_context(const ModelPlan& plan, uint64_t available) {
  const uint64_t base = plan.weight_bytes() + plan.activation_bytes + plan.cache_fixed_bytes + kPlanReserveBytes;
  if (base + plan.cache_bytes_per_token > available) return 0;
  if (plan.cache_bytes_per_token == 0) return plan.info.max_context;
  const uint64_t n = (available - base) / plan.cache_bytes_per_token;
  return static_cast<int64_t>(std::min<uint64_t>(n, static_cast<uint64_t>(plan.info.max_context)));
}

std::optional<std::string> largest_fitting_model(const std::vector<std::string>& dirs, int64_t context,
                                                 uint64_t available, std::vector<std::string>* notes) {
  std::optional<std::string> best;
  uint64_t best_bytes = 0;
  for (const std::string& dir : dirs) {
    try {
      PlanOptions options;
      options.context = context;
      const ModelPlan plan = plan_model_dir(dir, options);
      const bool fits = plan_fits(plan, available);
      if (notes)
        notes->push_back(dir + ": " + format_bytes(plan.total_bytes()) + (fits ? " fits" : " does not fit"));
      if (fits && (!best || plan.weight_bytes() > best_bytes)) best = dir, best_bytes = plan.weight_bytes();
    } catch (const std::exception& e) {
      if (notes) notes->push_back(dir + ": skipped (" + std::string(e.what()).substr(0, 200) + ")");
    }
  }
  return best;
}

std::string format_bytes(uint64_t bytes) {
  char buf[32];
  const double b = static_cast<double>(bytes);
  if (bytes >= 1'000'000'000) std::snprintf(buf, sizeof buf, "%.2f GB", b / 1e9);
  else if (bytes >= 1'000'000) std::snprintf(buf, sizeof buf, "%.1f MB", b / 1e6);
  else if (bytes >= 1'000) std::snprintf(buf, sizeof buf, "%.1f kB", b / 1e3);
  else std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  return buf;
}

}  // namespace purellm
