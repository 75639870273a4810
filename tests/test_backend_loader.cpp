// --device: the built-in CPU backend, and the CUDA plug-in loader's answers when the plug-in
// is missing or broken. (test_cuda checks a real plug-in; this runs everywhere.)
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "tensor/backend_loader.hpp"
#include "testdata.hpp"

using namespace purellm;

namespace {

std::string error_of(std::string_view device) {
  try {
    backend_for_device(device);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// Sets PURELLM_CUDA_PLUGIN for one test.
class PluginPath : public ::testing::Test {
 protected:
  void set(const std::string& path) { setenv("PURELLM_CUDA_PLUGIN", path.c_str(), 1); }
  void TearDown() override { unsetenv("PURELLM_CUDA_PLUGIN"); }
};

TEST(BackendLoader, CpuIsBuiltIn) { EXPECT_EQ(&backend_for_device("cpu"), &cpu_backend()); }

TEST(BackendLoader, UnknownDeviceIsNamed) {
  const std::string e = error_of("tpu");
  EXPECT_NE(e.find("\"tpu\""), std::string::npos) << e;
  EXPECT_NE(e.find("cpu or cuda"), std::string::npos) << e;
}

TEST(BackendLoader, LooksNextToTheProgramThenInLib) {
  const std::vector<std::string> paths = cuda_plugin_candidates();
  ASSERT_EQ(paths.size(), 3u);
  EXPECT_NE(paths[0].find("/bin/libpurellm_cuda.so"), std::string::npos) << paths[0];
  EXPECT_NE(paths[1].find("/lib/libpurellm_cuda.so"), std::string::npos) << paths[1];
  EXPECT_EQ(paths[2], "libpurellm_cuda.so");
}

TEST_F(PluginPath, MissingPluginSaysWhereItLookedAndHowToBuildIt) {
  set("/nonexistent/libpurellm_cuda.so");
  EXPECT_EQ(cuda_plugin_candidates(), std::vector<std::string>{"/nonexistent/libpurellm_cuda.so"});
  const std::string e = error_of("cuda");
  EXPECT_NE(e.find("not found"), std::string::npos) << e;
  EXPECT_NE(e.find("/nonexistent/libpurellm_cuda.so"), std::string::npos) << e;
  EXPECT_NE(e.find("--preset cuda"), std::string::npos) << e;
}

TEST_F(PluginPath, FileThatIsNotALibraryIsRefusedWithTheLoaderMessage) {
  const std::string path = ::testing::TempDir() + "not_a_plugin.so";
  std::ofstream(path) << "not an ELF file";
  set(path);
  const std::string e = error_of("cuda");
  EXPECT_NE(e.find("cannot load the plug-in"), std::string::npos) << e;
  EXPECT_NE(e.find(path), std::string::npos) << e;
}

// Runs `command` through the shell; returns its exit code and what it wrote (stderr included).
std::pair<int, std::string> shell(const std::string& command) {
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  std::string out;
  std::array<char, 4096> buf{};
  for (size_t n; (n = fread(buf.data(), 1, buf.size(), p)) > 0;) out.append(buf.data(), n);
  const int rc = pclose(p);
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, out};
}

TEST(AskDevice, CpuRunsAndUnknownOrMissingDevicesFailWithAReason) {
  REQUIRE_TESTDATA(model, "fixtures/llama-tiny");
  const std::string ask = std::string(PURELLM_BIN_DIR) + "/ask -m " + model + " --greedy -n 2 --prompt-ids 1,2,3 --print-ids";
  const auto [cpu_rc, cpu_out] = shell(ask + " --device cpu");
  EXPECT_EQ(cpu_rc, 0) << cpu_out;
  EXPECT_EQ(cpu_out.rfind("1 2 3 ", 0), 0u) << cpu_out;

  const auto [tpu_rc, tpu_out] = shell(ask + " --device tpu");
  EXPECT_EQ(tpu_rc, 1);
  EXPECT_NE(tpu_out.find("unknown device \"tpu\""), std::string::npos) << tpu_out;

  const auto [cuda_rc, cuda_out] = shell("PURELLM_CUDA_PLUGIN=/nonexistent/libpurellm_cuda.so " + ask + " --device cuda");
  EXPECT_EQ(cuda_rc, 1);
  EXPECT_NE(cuda_out.find("ask: error: --device cuda: the CUDA plug-in libpurellm_cuda.so was not found"),
            std::string::npos)
      << cuda_out;
}

}  // namespace
