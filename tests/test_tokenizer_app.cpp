// The `tokenize` app, run as a separate process: ids for a text argument, JSON Lines in and
// out (checked against the goldens), --add-special, and clear errors with a non-zero exit.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/test_tokenizer_util.hpp"

using namespace purellm;
using namespace purellm::test;
using nlohmann::json;

namespace {

struct RunResult {
  int status = -1;  // exit code
  std::string out, err;
};

std::string read_all(int fd) {
  std::string data;
  char buf[65536];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) data.append(buf, static_cast<size_t>(n));
  close(fd);
  return data;
}

// Runs the tokenize binary with `args` (no shell involved, so any text passes unchanged).
RunResult run_tokenize(const std::vector<std::string>& args) {
  int out[2], err[2];
  if (pipe(out) != 0 || pipe(err) != 0) return {};
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(err[1], 2);
    close(out[0]), close(out[1]), close(err[0]), close(err[1]);
    std::vector<char*> argv = {const_cast<char*>(PURELLM_TOKENIZE_BIN)};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(PURELLM_TOKENIZE_BIN, argv.data());
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  RunResult r;
  r.out = read_all(out[0]);  // the app writes little to stderr, so reading stdout first cannot block it
  r.err = read_all(err[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace

TEST(TokenizeApp, JsonlMatchesGoldens) {
  for (const char* name : {"gpt2", "llama2"}) {
    REQUIRE_TESTDATA(tok_path, "tokenizers/" + std::string(name) + "/tokenizer.json");
    REQUIRE_TESTDATA(gold_path, "tokgold/" + std::string(name) + ".jsonl");
    RunResult r = run_tokenize({"--tokenizer", tok_path, "--jsonl", gold_path});
    ASSERT_EQ(r.status, 0) << r.err;
    auto gold = read_jsonl(gold_path);
    std::istringstream lines(r.out);
    std::string line;
    size_t i = 0;
    for (; std::getline(lines, line); ++i) {
      ASSERT_LT(i, gold.size());
      json got = json::parse(line);
      // tokenizer.json ids/decode: the tokenizers.js fields where the goldens give them.
      EXPECT_EQ(got["ids"], gold[i].value("ids_fast_tokenizers_js", gold[i]["ids"])) << name << " line " << i + 1;
      EXPECT_EQ(got["decoded"], gold[i].value("decoded_fast_tokenizers_js", gold[i]["decoded"])) << name << " line " << i + 1;
    }
    EXPECT_EQ(i, gold.size()) << name;
  }
}

TEST(TokenizeApp, TextArgumentAndAddSpecial) {
  REQUIRE_TESTDATA(gpt2, "tokenizers/gpt2/tokenizer.json");
  REQUIRE_TESTDATA(inp, "tokvec/ggml-vocab-gpt-2.gguf.inp");
  REQUIRE_TESTDATA(out, "tokvec/ggml-vocab-gpt-2.gguf.out");
  auto cases = read_vocab_cases(inp, out);
  ASSERT_GT(cases.size(), 11u);
  for (size_t i : {0, 11}) {
    RunResult r = run_tokenize({"--tokenizer", gpt2, cases[i].text});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, ids_string(cases[i].ids) + "\n") << printable(cases[i].text);
  }
  REQUIRE_TESTDATA(llama2, "tokenizers/llama2");
  const Tokenizer& tok = cached_tokenizer(llama2);
  RunResult plain = run_tokenize({"--tokenizer", llama2, "Hello world"});
  RunResult special = run_tokenize({"--tokenizer", llama2, "--add-special", "Hello world"});
  EXPECT_EQ(plain.out, ids_string(tok.encode("Hello world")) + "\n");
  EXPECT_EQ(special.out, std::to_string(*tok.bos_id()) + " " + plain.out);
}

TEST(TokenizeApp, ClearErrors) {
  RunResult r = run_tokenize({"--tokenizer", "/nonexistent/tok.json", "hi"});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("/nonexistent/tok.json"), std::string::npos) << r.err;

  r = run_tokenize({"hi"});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("--tokenizer PATH is required"), std::string::npos) << r.err;

  REQUIRE_TESTDATA(gpt2, "tokenizers/gpt2/tokenizer.json");
  TempDir dir;
  std::string bad = dir.write("bad.jsonl", "{\"text\": \"fine\"}\n{\"text\": oops}\n");
  r = run_tokenize({"--tokenizer", gpt2, "--jsonl", bad});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("bad.jsonl:2: invalid JSON"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << "the good first line is still written";

  std::string no_text = dir.write("no_text.jsonl", "{\"txt\": \"x\"}\n");
  r = run_tokenize({"--tokenizer", gpt2, "--jsonl", no_text});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("no_text.jsonl:1: expected an object with a string \"text\""), std::string::npos) << r.err;

  r = run_tokenize({"--tokenizer", gpt2, "--jsonl", dir.str() + "/missing.jsonl"});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("missing.jsonl: cannot open"), std::string::npos) << r.err;
}
