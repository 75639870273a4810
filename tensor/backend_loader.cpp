#include "tensor/backend_loader.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace purellm {

namespace fs = std::filesystem;

namespace {

constexpr const char* kCudaPlugin = "libpurellm_cuda.so";

using AbiFn = int (*)();
using CreateFn = Backend* (*)(char* error, size_t error_size);

// Creates the backend of the plug-in `lib` loaded from `path`; throws naming the reason.
Backend* create_from(void* lib, const std::string& path) {
  auto abi = reinterpret_cast<AbiFn>(dlsym(lib, "purellm_plugin_abi"));
  auto create = reinterpret_cast<CreateFn>(dlsym(lib, "purellm_create_backend"));
  if (!abi || !create) throw std::runtime_error(path + " is not a purellm backend plug-in");
  if (abi() != kPluginAbi)
    throw std::runtime_error(path + " was built from a different version of purellm (plug-in ABI " +
                             std::to_string(abi()) + ", this program " + std::to_string(kPluginAbi) +
                             "); rebuild it from this tree");
  char error[512] = "";
  Backend* backend = create(error, sizeof error);
  if (!backend) throw std::runtime_error("--device cuda: " + std::string(error) + " (plug-in " + path + ")");
  return backend;
}

// The first candidate that exists is loaded (a file that exists but fails to load is an error,
// not a reason to try the next one).
Backend* load_cuda_plugin() {
  const std::vector<std::string> candidates = cuda_plugin_candidates();
  std::string last_error;
  for (const std::string& path : candidates) {
    const bool is_path = path.find('/') != std::string::npos;
    if (is_path && !fs::exists(path)) continue;
    // Never closed: the backend's code and every device buffer's deleter live in the library.
    if (void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL)) return create_from(lib, path);
    last_error = dlerror();
    if (is_path)
      throw std::runtime_error("--device cuda: cannot load the plug-in: " + last_error +
                               "\n(libcuda.so.1 missing means no NVIDIA driver is installed)");
  }
  std::string msg = std::string("--device cuda: the CUDA plug-in ") + kCudaPlugin + " was not found; looked for:";
  for (const std::string& path : candidates) msg += "\n  " + path;
  if (!last_error.empty()) msg += "\n(" + last_error + ")";
  msg += "\nBuild it with `cmake --preset cuda && cmake --build --preset cuda` (needs nvcc), or set "
         "PURELLM_CUDA_PLUGIN to its path.";
  throw std::runtime_error(msg);
}

Backend& cuda_backend() {
  static Backend* backend = load_cuda_plugin();  // retried on the next call if it threw
  return *backend;
}

}  // namespace

std::vector<std::string> cuda_plugin_candidates() {
  if (const char* env = std::getenv("PURELLM_CUDA_PLUGIN"); env && *env) return {env};
  std::vector<std::string> paths;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    paths.push_back((exe.parent_path() / kCudaPlugin).string());
    paths.push_back((exe.parent_path().parent_path() / "lib" / kCudaPlugin).string());
  }
  paths.push_back(kCudaPlugin);  // no slash: dlopen searches LD_LIBRARY_PATH and the system folders
  return paths;
}

Backend& backend_for_device(std::string_view device) {
  if (device == "cpu") return cpu_backend();
  if (device == "cuda") return cuda_backend();
  throw std::runtime_error("unknown device \"" + std::string(device) + "\" (choose cpu or cuda)");
}

}  // namespace purellm
