// Shared pieces of the fuzz targets: a scratch folder for targets whose code under test reads
// files, the test data root, and FUZZ_CHECK for invariants (a failed check aborts, which
// libFuzzer reports as a crash with the input that caused it).
//
// Error policy every target follows: the loaders document which exception a bad input gets
// (SafetensorsError, TokenizerError, std::runtime_error with a message). A target catches
// exactly that type; anything else escaping (nlohmann::json::exception, std::out_of_range,
// std::length_error, std::bad_alloc, a crash, a leak, a hang) is a finding.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace purellm::fuzz {

// A folder of this process's own, removed at exit: in /dev/shm when present (no disk I/O per
// input), else $TMPDIR or /tmp.
const std::string& scratch_dir();

// Writes `bytes` to `path` (replacing it); aborts on I/O failure (that is the harness failing,
// not the code under test).
void write_file(const std::string& path, std::string_view bytes);

// $PURELLM_TESTDATA, else the folder CMake saw at configure time.
std::string testdata_root();

// The input as text.
inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

[[noreturn]] inline void check_failed(const char* what, const char* file, int line) {
  std::fprintf(stderr, "FUZZ_CHECK failed at %s:%d: %s\n", file, line, what);
  std::abort();
}

}  // namespace purellm::fuzz

#define FUZZ_CHECK(cond) \
  ((cond) ? void(0) : purellm::fuzz::check_failed(#cond, __FILE__, __LINE__))
