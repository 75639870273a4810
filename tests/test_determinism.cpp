// Determinism, as users run it: the same model, seed and flags give byte-identical output on
// every run; greedy decoding gives the same output with 1 and 2 threads; seeded sampling gives
// the same output on every run (and a different seed changes it, so the seed is really used).
#include <gtest/gtest.h>

#include "ask_run.hpp"
#include "testdata.hpp"

using namespace purellm::test;

namespace {

std::string output_of(const std::string& args) {
  const AskRun r = run_ask(args);
  EXPECT_EQ(r.status, 0) << "args: " << args << "\nstderr: " << r.err;
  EXPECT_FALSE(r.out.empty()) << args;
  return r.out;
}

// Every fixture whose architecture ask supports, fed ids (no tokenizer needed).
const char* const kFixtures[] = {"gpt2-tiny",    "llama-tiny",    "llama3rope-tiny", "mistral-tiny",
                                 "qwen2-tiny",   "falcon-tiny",   "falcon40b-tiny",  "opt-tiny",
                                 "gpt-neox-tiny", "bloom-tiny"};

TEST(Determinism, GreedyIdsAreTheSameOnEveryRunAndThreadCount) {
  for (const char* name : kFixtures) {
    REQUIRE_TESTDATA(dir, std::string("fixtures/") + name);
    const std::string args = "-m " + quote(dir) + " --greedy --ignore-eos -n 40 --prompt-ids 5,17,3,250,9 --print-ids";
    const std::string one = output_of(args + " -t 1");
    EXPECT_EQ(output_of(args + " -t 1"), one) << name;
    EXPECT_EQ(output_of(args + " -t 2"), one) << name;
  }
}

TEST(Determinism, Stories260KGreedyTextIsByteIdenticalAcrossThreads) {
  REQUIRE_TESTDATA(dir, "models/stories260K");
  const std::string args = "-m " + quote(dir) + " --greedy -n 120 'Once upon a time'";
  const std::string one = output_of(args + " -t 1");
  EXPECT_EQ(output_of(args + " -t 1"), one);
  EXPECT_EQ(output_of(args + " -t 2"), one);
}

TEST(Determinism, SeededSamplingRepeatsAndTheSeedMatters) {
  REQUIRE_TESTDATA(dir, "models/stories260K");
  const std::string args = "-m " + quote(dir) + " --temp 1.0 --top-k 0 --top-p 1 -n 80 --print-ids 'Once upon a time'";
  for (const char* threads : {" -t 1", " -t 2"}) {
    const std::string a = output_of(args + " --seed 42" + threads);
    EXPECT_EQ(output_of(args + " --seed 42" + threads), a) << threads;
    EXPECT_NE(output_of(args + " --seed 43" + threads), a) << threads;
  }
  // The text path (stream decoder) with sampling, too.
  const std::string text_args = "-m " + quote(dir) + " --temp 0.8 --top-k 40 --top-p 0.9 --seed 7 -n 80 'Once'";
  EXPECT_EQ(output_of(text_args), output_of(text_args));
}

}  // namespace
