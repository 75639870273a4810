// Running a built app from a test as a user would: a shell command line, optional standard
// input, and the exit status, stdout and stderr captured.
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

struct AppRun {
  int status = -1;
  std::string out, err;
};

// Runs `bin_dir/app args` (args already shell-quoted); `input` is fed on standard input.
inline AppRun run_app(const std::string& bin_dir, const std::string& app, const std::string& args,
                      const std::string& input = "") {
  namespace fs = std::filesystem;
  const std::string tag = app + "_" + std::to_string(::getpid());
  const fs::path err_file = fs::temp_directory_path() / ("purellm_err_" + tag);
  const fs::path in_file = fs::temp_directory_path() / ("purellm_in_" + tag);
  std::ofstream(in_file, std::ios::binary) << input;
  const std::string cmd = bin_dir + "/" + app + " " + args + " <" + in_file.string() + " 2>" + err_file.string();
  AppRun r;
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
  fs::remove(err_file);
  fs::remove(in_file);
  return r;
}

inline std::string quote(const std::string& s) { return "'" + s + "'"; }

}  // namespace purellm::test
