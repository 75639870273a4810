// Running the ask binary from a test as a user would (run_app, app_runner.hpp), plus scratch
// copies of test data folders that a test may break.
#pragma once

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "app_runner.hpp"
#include "temp_dir.hpp"

namespace purellm::test {

using AskRun = AppRun;

// Runs PURELLM_BIN_DIR/ask with `args` (already shell-quoted).
inline AskRun run_ask(const std::string& args) { return run_app(PURELLM_BIN_DIR, "ask", args); }

// A writable copy of the folder `src` (its files only), removed when the object goes.
class ScratchCopy : public TempDir {
 public:
  ScratchCopy(const std::string& src, const std::string& name) : TempDir("purellm_" + name) {
    namespace fs = std::filesystem;
    for (const auto& e : fs::directory_iterator(src))
      if (e.is_regular_file()) fs::copy_file(e.path(), path() / e.path().filename());
    for (const auto& e : fs::directory_iterator(path()))
      fs::permissions(e.path(), fs::perms::owner_write, fs::perm_options::add);
  }
};

inline std::string read_file_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_file_text(const std::filesystem::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << text;
}

}  // namespace purellm::test
