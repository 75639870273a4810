// Chat prompt formats and the chat app.
//   - every case of tests/data/chat_templates.json renders to exactly the text transformers'
//     apply_chat_template gives (real templates from the shared test data, and stored public
//     ones for Llama-2-chat, TinyLlama-Chat and DialoGPT);
//   - templates are recognised from the real tokenizer_config.json files; unknown ones get a
//     message that points at --template;
//   - a scripted conversation with stories260K keeps its KV cache: the second turn feeds only
//     its own tokens, and its reply equals what a fresh run over the whole history gives.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "app_runner.hpp"
#include "ask_run.hpp"
#include "temp_dir.hpp"
#include "apps/chat_template.hpp"
#include "models/model.hpp"
#include "testdata.hpp"

using namespace purellm;
using test::quote;
namespace fs = std::filesystem;

namespace {

nlohmann::json cases_file() {
  std::ifstream in(std::string(PURELLM_SOURCE_DIR) + "/tests/data/chat_templates.json");
  return nlohmann::json::parse(in);
}

// The template a case names: a real model folder in the test data, or a stored Jinja string.
chat::Template template_named(const nlohmann::json& doc, const std::string& name) {
  const auto& t = doc["templates"][name];
  if (t.contains("dir")) {
    const std::string dir = test::testdata_path(t["dir"].get<std::string>());
    if (dir.empty()) throw std::runtime_error("missing test data " + t["dir"].get<std::string>());
    return *chat::template_for(dir, "");
  }
  const std::string jinja = t["jinja"];
  chat::Template tmpl;
  tmpl.format = *chat::recognise(jinja);
  tmpl.bos_token = t["bos_token"];
  tmpl.eos_token = t["eos_token"];
  if (tmpl.format == chat::Format::ChatML) tmpl.default_system = chat::chatml_default_system(jinja);
  return tmpl;
}

TEST(ChatTemplate, RendersWhatTransformersRenders) {
  REQUIRE_TESTDATA(tokenizers, "tokenizers");
  const nlohmann::json doc = cases_file();
  ASSERT_GT(doc["cases"].size(), 30u);
  for (const auto& c : doc["cases"]) {
    chat::Template tmpl = template_named(doc, c["template"]);
    if (c.contains("date")) tmpl.date = c["date"];
    std::vector<chat::Message> messages;
    for (const auto& m : c["messages"]) messages.push_back({m["role"], m["content"]});
    EXPECT_EQ(tmpl.render(messages, c["add_generation_prompt"].get<bool>()), c["expected"].get<std::string>())
        << c["template"] << ": " << c["case"];
  }
}

TEST(ChatTemplate, RecognisesEachTemplateItsFormat) {
  REQUIRE_TESTDATA(tokenizers, "tokenizers");
  const nlohmann::json doc = cases_file();
  for (auto it = doc["templates"].begin(); it != doc["templates"].end(); ++it) {
    const chat::Template t = template_named(doc, it.key());
    EXPECT_EQ(t.name(), it.value()["format"].get<std::string>()) << it.key();
  }
  for (const auto& jinja : doc["unrecognised"]) EXPECT_EQ(chat::recognise(jinja.get<std::string>()), std::nullopt) << jinja;
  // Folders without a chat template: none (a base model), unless a format is named.
  REQUIRE_TESTDATA(gpt2, "tokenizers/gpt2");
  EXPECT_EQ(chat::template_for(gpt2, ""), std::nullopt);
  EXPECT_EQ(chat::template_for(gpt2, "dialogpt")->name(), "dialogpt");
  EXPECT_EQ(chat::template_for(gpt2, "dialogpt")->eos_token, "<|endoftext|>");
}

TEST(ChatTemplate, DefaultSystemMessagesComeFromTheTemplates) {
  REQUIRE_TESTDATA(smol, "tokenizers/smollm2");
  REQUIRE_TESTDATA(qwen, "tokenizers/qwen2.5");
  EXPECT_EQ(chat::template_for(smol, "")->default_system, "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  EXPECT_EQ(chat::template_for(qwen, "")->default_system, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
}

TEST(ChatTemplate, UnknownTemplatesPointAtTheFlag) {
  const nlohmann::json doc = cases_file();
  const TempDir tmp("purellm_chat");
  const fs::path& d = tmp.path();
  tmp.write("tokenizer_config.json", nlohmann::json{{"chat_template", doc["unrecognised"][0]}, {"eos_token", "</s>"}}.dump());
  try {
    chat::template_for(d.string(), "");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("tokenizer_config.json"), std::string::npos) << m;
    EXPECT_NE(m.find("--template"), std::string::npos) << m;
  }
  EXPECT_EQ(chat::template_for(d.string(), "zephyr")->name(), "zephyr");  // the flag wins
  EXPECT_THROW(chat::template_for(d.string(), "vicuna"), std::runtime_error);
  // chat_template.jinja beside the config wins (transformers >= 4.43 saves it there), and a
  // list of named templates gives its "default" one.
  tmp.write("chat_template.jinja", "{% for m in messages %}<|im_start|>{{ m.role }}<|im_end|>{% endfor %}");
  EXPECT_EQ(chat::template_for(d.string(), "")->name(), "chatml");
  fs::remove(d / "chat_template.jinja");
  const nlohmann::json named = {{"chat_template", {{{"name", "tool_use"}, {"template", "x"}},
                                                  {{"name", "default"}, {"template", "<|start_header_id|>"}}}}};
  tmp.write("tokenizer_config.json", named.dump());
  EXPECT_EQ(chat::template_for(d.string(), "")->name(), "llama3");
}

TEST(ChatTemplate, Llama2NeedsAlternatingTurns) {
  chat::Template t;
  t.format = chat::Format::Llama2;
  t.bos_token = "<s>";
  t.eos_token = "</s>";
  const std::vector<chat::Message> bad = {{"user", "a"}, {"user", "b"}};
  EXPECT_THROW(t.render(bad, true), std::invalid_argument);
}

// Rendered prompts reach the model with their markers as single special tokens, and each
// format's stop token exists in its tokenizer. (Llama 3's 128k-token tokenizer is checked
// through its tokenizer_config.json: loading it takes seconds under the sanitizers.)
TEST(ChatTemplate, MarkersAreSpecialTokensOfTheRealTokenizers) {
  for (const char* name : {"smollm2", "granite-3.1"}) {
    const std::string dir = test::testdata_path(std::string("tokenizers/") + name);
    if (dir.empty()) {
      if (test::testdata_required()) FAIL() << "missing tokenizers/" << name;
      GTEST_SKIP() << "test data not found: tokenizers/" << name;
    }
    const Tokenizer tok = Tokenizer::load(dir);
    const chat::Template t = *chat::template_for(dir, "");
    const std::vector<int32_t> stops = chat::stop_ids(t, tok);
    ASSERT_EQ(stops.size(), 1u) << name;
    const std::vector<chat::Message> m = {{"user", "Hi"}};
    const std::string text = t.render(m, true);
    const std::vector<int32_t> ids = tok.encode(text, t.add_special());
    EXPECT_NE(std::find(ids.begin(), ids.end(), stops[0]), ids.end()) << name << ": the turn's end marker is one token";
    EXPECT_EQ(tok.decode(ids), text) << name;
  }
  REQUIRE_TESTDATA(llama3, "tokenizers/llama3");
  const chat::Template t = *chat::template_for(llama3, "");
  const nlohmann::json config = read_json_file(llama3 + "/tokenizer_config.json");
  std::vector<std::string> markers = t.stop_tokens();
  markers.insert(markers.end(), {"<|start_header_id|>", "<|end_header_id|>", t.bos_token});
  for (const std::string& marker : markers) {
    bool special = false;
    for (const auto& [id, token] : config.at("added_tokens_decoder").items())
      special = special || (token.at("content") == marker && token.at("special").get<bool>());
    EXPECT_TRUE(special) << marker;
  }
}

// ---- the chat app --------------------------------------------------------------------------

test::AppRun chat(const std::string& args, const std::string& input) {
  return test::run_app(PURELLM_BIN_DIR, "chat", args, input);
}

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::istringstream in(s);
  for (int32_t v; in >> v;) ids.push_back(v);
  return ids;
}

// "[ids] fed 1 2 | generated 3 4" lines -> (fed, generated) per turn.
std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> turns(const std::string& err) {
  std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> out;
  std::istringstream in(err);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("[ids] fed ", 0) != 0) continue;
    const size_t bar = line.find(" | generated ");
    out.push_back({parse_ids(line.substr(10, bar - 10)), parse_ids(line.substr(bar + 13))});
  }
  return out;
}

std::string join(const std::vector<int32_t>& ids, const char* sep) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? sep : "") + std::to_string(ids[i]);
  return s;
}

TEST(ChatApp, SecondTurnFeedsOnlyItsOwnTokensAndContinuesTheSameSequence) {
  REQUIRE_TESTDATA(dir, "models/stories260K");
  const test::AppRun r = chat("-m " + quote(dir) + " --template raw --greedy -n 12 --print-ids --stats",
                              "Once upon a time\n/stats\nThe cat\n");
  ASSERT_EQ(r.status, 0) << r.err;
  const auto t = turns(r.err);
  ASSERT_EQ(t.size(), 2u) << r.err;
  const auto& [fed1, gen1] = t[0];
  const auto& [fed2, gen2] = t[1];
  const Tokenizer tok = Tokenizer::load(dir);
  EXPECT_EQ(fed1, tok.encode("Once upon a time", true));
  ASSERT_EQ(gen1.size(), 12u);
  // Turn 2 feeds the last reply token (never fed back by generation) and its own text; nothing
  // of the history is prefilled again.
  std::vector<int32_t> expected = {gen1.back()};
  for (int32_t id : tok.encode("The cat", false)) expected.push_back(id);
  EXPECT_EQ(fed2, expected);
  const int64_t positions = static_cast<int64_t>(fed1.size() + gen1.size() - 1 + fed2.size() + gen2.size() - 1);
  EXPECT_NE(r.err.find("turn 2: fed " + std::to_string(fed2.size()) + " tokens"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("cache " + std::to_string(positions) + " of 512 positions"), std::string::npos) << r.err;

  // The reply equals a fresh greedy run over the whole conversation as one prompt.
  std::vector<int32_t> all = fed1;
  all.insert(all.end(), gen1.begin(), gen1.end());
  all.insert(all.end(), fed2.begin() + 1, fed2.end());
  const test::AppRun fresh = test::run_app(PURELLM_BIN_DIR, "ask", "-m " + quote(dir) + " --greedy --print-ids -n " +
                                                                       std::to_string(gen2.size()) + " --prompt-ids " + join(all, ","));
  ASSERT_EQ(fresh.status, 0) << fresh.err;
  std::vector<int32_t> whole = all;
  whole.insert(whole.end(), gen2.begin(), gen2.end());
  EXPECT_EQ(fresh.out, join(whole, " ") + "\n");
  // The first reply is the start of the reference story (run.c's greedy output).
  EXPECT_EQ(r.out.rfind(", there was a little girl named Lily.", 0), 0u) << r.out;
}

TEST(ChatApp, AFullContextIsAMessageAndResetStartsOver) {
  REQUIRE_TESTDATA(dir, "models/stories260K");
  const test::AppRun r = chat("-m " + quote(dir) + " --template raw --greedy -n 12 -c 24 --print-ids",
                              "Once upon a time\nThe little girl went to the park and played with her friends all day long\n"
                              "The\n/reset\nOnce upon a time\n");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("context full"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("/reset"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("[the context is full"), std::string::npos) << r.err;  // "The" used the last positions
  EXPECT_NE(r.err.find("[conversation reset]"), std::string::npos) << r.err;
  const auto t = turns(r.err);
  ASSERT_EQ(t.size(), 3u) << r.err;  // the turn that did not fit left no trace
  EXPECT_EQ(t[0], t[2]);             // after /reset, the same first turn again
  EXPECT_EQ(t[1].second.size(), 24u - (5 + 11) - t[1].first.size() + 1);
}

TEST(ChatApp, TemplatesAndErrors) {
  REQUIRE_TESTDATA(dir, "models/stories260K");
  const test::AppRun none = chat("-m " + quote(dir), "hello\n");
  EXPECT_EQ(none.status, 1);
  EXPECT_NE(none.err.find("--template"), std::string::npos) << none.err;
  const test::AppRun bad = chat("-m " + quote(dir) + " --template vicuna", "hello\n");
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.err.find("chatml"), std::string::npos) << bad.err;  // lists the known formats
  // Zephyr on a Llama-2 vocabulary: the turn is rendered and ends the reply at </s>.
  const test::AppRun z = chat("-m " + quote(dir) + " --template zephyr --system 'Be brief.' --greedy -n 8 --print-ids",
                              "Hi\n/stats\n");
  ASSERT_EQ(z.status, 0) << z.err;
  const Tokenizer tok = Tokenizer::load(dir);
  EXPECT_EQ(turns(z.err).at(0).first, tok.encode("<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\n", false));
  EXPECT_NE(z.err.find("[stats] turn 1"), std::string::npos) << z.err;
  const test::AppRun empty = chat("-m " + quote(dir) + " --template raw", "");  // Ctrl-D at once
  EXPECT_EQ(empty.status, 0) << empty.err;
}

// ask formats the prompt for chat models unless --raw; the reply ends at the turn's end.
TEST(AskChat, AppliesTheTemplateUnlessRaw) {
  REQUIRE_TESTDATA(dir, "models/stories260K");
  const Tokenizer tok = Tokenizer::load(dir);
  auto prompt_ids = [&](const std::string& flags) {
    const test::AppRun r = test::run_app(PURELLM_BIN_DIR, "ask", "-m " + quote(dir) + " --greedy -n 1 --print-ids " + flags + " Hi");
    EXPECT_EQ(r.status, 0) << r.err;
    std::vector<int32_t> ids = parse_ids(r.out);
    if (!ids.empty()) ids.pop_back();  // the generated token
    return ids;
  };
  EXPECT_EQ(prompt_ids(""), tok.encode("Hi", true));  // no chat_template: plain text
  EXPECT_EQ(prompt_ids("--template llama2 --system S"), tok.encode("<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nHi [/INST]", false));
  // A chat model (a copy of stories260K whose tokenizer_config.json has a zephyr template).
  const test::ScratchCopy copy(dir, "chat");
  const fs::path& d = copy.path();
  nlohmann::json config = read_json_file((fs::path(dir) / "tokenizer_config.json").string());
  config["chat_template"] = cases_file()["templates"]["tinyllama-chat"]["jinja"];
  copy.write("tokenizer_config.json", config.dump());
  const std::string dq = quote(d.string());
  const test::AppRun chatty = test::run_app(PURELLM_BIN_DIR, "ask", "-m " + dq + " --greedy -n 1 --print-ids Hi");
  ASSERT_EQ(chatty.status, 0) << chatty.err;
  std::vector<int32_t> ids = parse_ids(chatty.out);
  ids.pop_back();
  EXPECT_EQ(ids, tok.encode("<|user|>\nHi</s>\n<|assistant|>\n", false));
  const test::AppRun raw = test::run_app(PURELLM_BIN_DIR, "ask", "-m " + dq + " --greedy -n 1 --print-ids --raw Hi");
  ids = parse_ids(raw.out);
  ids.pop_back();
  EXPECT_EQ(ids, tok.encode("Hi", true));
}

}  // namespace
