// Running the ask binary from a test as a user would: arguments in, exit status, stdout and
// stderr out; plus scratch copies of test data folders that a test may break.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace purellm::test {

struct AskRun {
  int status = -1;  // exit status; -1 when killed by a signal
  std::string out, err;
};

inline std::string quote(const std::string& s) { return "'" + s + "'"; }

// Runs PURELLM_BIN_DIR/ask with `args` (already shell-quoted).
inline AskRun run_ask(const std::string& args) {
  static int serial = 0;
  const std::filesystem::path err_file =
      std::filesystem::temp_directory_path() / ("ask_err_" + std::to_string(::getpid()) + "_" + std::to_string(serial++));
  const std::string cmd = std::string(PURELLM_BIN_DIR) + "/ask " + args + " 2>" + err_file.string();
  AskRun r;
  FILE* p = popen(cmd.c_str(), "r");
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int rc = pclose(p);
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  std::ifstream e(err_file);
  std::stringstream ss;
  ss << e.rdbuf();
  r.err = ss.str();
  std::filesystem::remove(err_file);
  return r;
}

// A writable copy of the folder `src` (its files only), removed when the object goes.
class ScratchCopy {
 public:
  ScratchCopy(const std::string& src, const std::string& name)
      : dir_(std::filesystem::temp_directory_path() /
             ("purellm_" + name + "_" + std::to_string(::getpid()))) {
    namespace fs = std::filesystem;
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    for (const auto& e : fs::directory_iterator(src))
      if (e.is_regular_file()) fs::copy_file(e.path(), dir_ / e.path().filename());
    for (const auto& e : fs::directory_iterator(dir_))
      fs::permissions(e.path(), fs::perms::owner_write, fs::perm_options::add);
  }
  ~ScratchCopy() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  ScratchCopy(const ScratchCopy&) = delete;
  ScratchCopy& operator=(const ScratchCopy&) = delete;
  const std::filesystem::path& path() const { return dir_; }
  std::string str() const { return dir_.string(); }

 private:
  std::filesystem::path dir_;
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
