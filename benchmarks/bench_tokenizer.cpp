// Encode (and decode) speed of the tokenizer on ~1 MB of mixed text: English prose, code,
// Chinese / Japanese / Korean, emoji and numbers, generated deterministically (same text every
// run). Reports MB/s of input text. Tokenizers come from $PURELLM_TESTDATA (default
// ../shared/testdata); a missing one is skipped with a message.
//
//   build/release/bin/bench_tokenizer --benchmark_min_time=2
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.hpp"

namespace {

constexpr size_t kTextBytes = 1'000'000;

struct Rng {
  uint64_t state;
  uint32_t next() {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<uint32_t>(state >> 33);
  }
  template <class T>
  const T& pick(const std::vector<T>& v) { return v[next() % v.size()]; }
};

const std::vector<std::string> kWords = {
    "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not",
    "he", "I", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you", "were",
    "their", "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will", "would", "who",
    "so", "no", "model", "tokenizer", "language", "inference", "memory", "bandwidth", "throughput", "Hugging", "Face",
    "transformer", "attention", "embedding", "gradient", "don't", "it's", "we're", "they'll", "I'd", "you've",
    "extraordinary", "nevertheless", "approximately", "Mississippi", "Zürich", "naïve", "café", "résumé"};
const std::vector<std::string> kPunct = {".", ",", ";", ":", "!", "?", " -", " (see above)", "'s", "\""};
const std::vector<std::string> kCode = {
    "for (int i = 0; i < n; ++i) {\n    sum += a[i] * b[i];\n}\n",
    "def forward(self, x):\n    h = self.norm(x)\n    return x + self.mlp(h)\n",
    "    if (ptr == nullptr) return std::nullopt;\n",
    "SELECT id, name FROM users WHERE created_at > '2024-01-01' ORDER BY id DESC;\n",
    "const result = await fetch(`${baseUrl}/api/v1/items?limit=${limit}`);\n",
    "\t\treturn std::vector<int32_t>(ids.begin(), ids.end());\n",
    "fn main() {\n    println!(\"{:?}\", vec![1, 2, 3]);\n}\n",
    "<div class=\"container\"><span id=\"x\">&nbsp;</span></div>\n"};
const std::vector<std::string> kCjk = {
    "机器学习是人工智能的一个分支。", "今天天气很好，我们去公园散步吧。", "東京は日本の首都です。",
    "ひらがなとカタカナと漢字を使います。", "한국어 문장도 조금 넣어 봅시다.", "大型语言模型需要大量的计算资源。"};
const std::vector<std::string> kEmoji = {"😀", "🚀", "👍🏽", "👨‍👩‍👧‍👦", "🇯🇵", "❤️", "🎉", "🤖", "✅"};

std::string number(Rng& rng) {
  switch (rng.next() % 4) {
    case 0: return std::to_string(rng.next() % 100000);
    case 1: return std::to_string(rng.next() % 1000) + "." + std::to_string(rng.next() % 100);
    case 2: return "20" + std::to_string(10 + rng.next() % 15) + "-0" + std::to_string(1 + rng.next() % 9) + "-1" +
                   std::to_string(rng.next() % 10);
    default: return std::to_string(rng.next()) + std::to_string(rng.next());
  }
}

std::string sentence(Rng& rng) {
  std::string s;
  int n = 6 + static_cast<int>(rng.next() % 15);
  for (int i = 0; i < n; ++i) {
    std::string w = rng.pick(kWords);
    if (i == 0 && w[0] >= 'a' && w[0] <= 'z') w[0] = static_cast<char>(w[0] - 32);
    if (i > 0) s += ' ';
    s += rng.next() % 12 == 0 ? number(rng) : w;
    if (rng.next() % 8 == 0) s += rng.pick(kPunct);
  }
  return s + ". ";
}

// ~70% prose, 15% code, 8% CJK, 4% emoji, 3% numbers, by paragraphs.
const std::string& mixed_text() {
  static const std::string text = [] {
    Rng rng{42};
    std::string t;
    while (t.size() < kTextBytes) {
      uint32_t r = rng.next() % 100;
      if (r < 70) {
        for (int i = 0; i < 4; ++i) t += sentence(rng);
        t += "\n\n";
      } else if (r < 85) {
        t += rng.pick(kCode);
      } else if (r < 93) {
        for (int i = 0; i < 3; ++i) t += rng.pick(kCjk);
        t += "\n";
      } else if (r < 97) {
        for (int i = 0; i < 5; ++i) t += rng.pick(kEmoji) + (rng.next() % 2 ? " " : "");
        t += "\n";
      } else {
        for (int i = 0; i < 8; ++i) t += number(rng) + (i % 3 == 2 ? ", " : " ");
        t += "\n";
      }
    }
    return t;
  }();
  return text;
}

std::string testdata_root() {
  const char* env = std::getenv("PURELLM_TESTDATA");
  return env && *env ? env : "../shared/testdata";
}

void encode(benchmark::State& state, const purellm::Tokenizer& tok) {
  const std::string& text = mixed_text();
  size_t tokens = 0;
  for (auto _ : state) {
    std::vector<int32_t> ids = tok.encode(text);
    tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["tokens"] = static_cast<double>(tokens);
  state.counters["bytes_per_token"] = static_cast<double>(text.size()) / static_cast<double>(tokens);
}

void stream_decode(benchmark::State& state, const purellm::Tokenizer& tok) {
  const std::string& text = mixed_text();
  std::vector<int32_t> ids = tok.encode(text);
  for (auto _ : state) {
    purellm::StreamDecoder stream(tok);
    size_t n = 0;
    for (int32_t id : ids) n += stream.push(id).size();
    n += stream.finish().size();
    benchmark::DoNotOptimize(n);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * ids.size()));
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  static std::vector<std::unique_ptr<purellm::Tokenizer>> loaded;
  const std::pair<const char*, const char*> tokenizers[] = {{"gpt2", "tokenizers/gpt2/tokenizer.json"},
                                                            {"llama2", "tokenizers/llama2/tokenizer.json"},
                                                            {"llama3", "tokenizers/llama3/tokenizer.json"},
                                                            {"qwen2", "tokenizers/qwen2.5/tokenizer.reconstructed.json"}};
  for (const auto& [name, rel] : tokenizers) {
    std::string path = testdata_root() + "/" + rel;
    if (!std::filesystem::exists(path)) {
      std::cerr << "bench_tokenizer: skipping " << name << ": " << path << " not found (set PURELLM_TESTDATA)\n";
      continue;
    }
    loaded.push_back(std::make_unique<purellm::Tokenizer>(purellm::Tokenizer::load(path)));
    const purellm::Tokenizer& tok = *loaded.back();
    benchmark::RegisterBenchmark((std::string("encode/") + name).c_str(), encode, std::cref(tok))->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((std::string("stream_decode/") + name).c_str(), stream_decode, std::cref(tok))
        ->Unit(benchmark::kMillisecond);
  }
  std::cerr << "bench_tokenizer: text of " << mixed_text().size() << " bytes\n";
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
