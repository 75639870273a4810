// Where tests find ../shared/testdata: $PURELLM_TESTDATA (set by CTest from the CMake cache,
// default ../shared/testdata next to the repo). A missing file skips the test with the
// reason printed, unless PURELLM_REQUIRE_TESTDATA=1 (CI), where it fails.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace purellm::test {

// Without $PURELLM_TESTDATA: the folder CMake was configured with. gtest_discover_tests runs
// each binary at build time without the tests' environment, and parameterized suites list
// their cases from the test data then: a relative default found nothing there, and the
// fixture cases were registered as a placeholder that ran zero tests and passed.
#ifndef PURELLM_TESTDATA_DEFAULT
#define PURELLM_TESTDATA_DEFAULT "../shared/testdata"
#endif

inline std::string testdata_root() {
  const char* env = std::getenv("PURELLM_TESTDATA");
  return env && *env ? env : PURELLM_TESTDATA_DEFAULT;
}

inline bool testdata_required() {
  const char* env = std::getenv("PURELLM_REQUIRE_TESTDATA");
  return env && std::string(env) == "1";
}

// Absolute path of `rel` under the test data folder, or "" when it does not exist.
inline std::string testdata_path(const std::string& rel) {
  std::filesystem::path p = std::filesystem::path(testdata_root()) / rel;
  return std::filesystem::exists(p) ? std::filesystem::absolute(p).string() : std::string();
}

}  // namespace purellm::test

// Declares `std::string var` = the path of `rel` in the test data, or skips / fails the test.
#define REQUIRE_TESTDATA(var, rel)                                                          \
  const std::string var = purellm::test::testdata_path(rel);                                \
  if (var.empty()) {                                                                         \
    if (purellm::test::testdata_required()) FAIL() << "missing test data: " << (rel);       \
    GTEST_SKIP() << "test data not found: " << purellm::test::testdata_root() << "/" << (rel) \
                 << " (set PURELLM_TESTDATA)";                                               \
  }
