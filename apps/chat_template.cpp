#include "apps/chat_template.hpp"

#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "models/model.hpp"

namespace purellm::chat {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kWhitespace = " \t\n\r\v\f";

// Python's str.strip() / Jinja's trim (ASCII whitespace is all these templates meet).
std::string strip(std::string_view s) {
  const size_t a = s.find_first_not_of(kWhitespace);
  if (a == std::string_view::npos) return "";
  return std::string(s.substr(a, s.find_last_not_of(kWhitespace) - a + 1));
}

std::string render_chatml(const Template& t, std::span<const Message> msgs, bool gen) {
  std::string out;
  if (!t.default_system.empty() && (msgs.empty() || msgs[0].role != "system"))
    out += "<|im_start|>system\n" + t.default_system + "<|im_end|>\n";
  for (const Message& m : msgs) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  if (gen) out += "<|im_start|>assistant\n";
  return out;
}

// The system message goes inside the first user turn; only user and assistant turns follow.
std::string render_llama2(const Template& t, std::span<const Message> msgs) {
  std::string system;
  bool has_system = false;
  if (!msgs.empty() && msgs[0].role == "system") {
    system = msgs[0].content;
    has_system = true;
    msgs = msgs.subspan(1);
  }
  std::string out;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const Message& m = msgs[i];
    if ((m.role == "user") != (i % 2 == 0))
      throw std::invalid_argument("llama2 chat format: roles must alternate user/assistant/user/...");
    std::string content;
    if (i == 0 && has_system) content.append("<<SYS>>\n").append(system).append("\n<</SYS>>\n\n");
    content.append(m.content);
    if (m.role == "user") out += t.bos_token + "[INST] " + strip(content) + " [/INST]";
    else if (m.role == "assistant") out.append(" ").append(strip(content)).append(" ").append(t.eos_token);
  }
  return out;
}

std::string render_llama3(const Template& t, std::span<const Message> msgs, bool gen) {
  std::string out;
  for (size_t i = 0; i < msgs.size(); ++i) {
    if (i == 0) out += t.bos_token;
    out += "<|start_header_id|>" + msgs[i].role + "<|end_header_id|>\n\n" + strip(msgs[i].content) + "<|eot_id|>";
  }
  if (gen) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

std::string render_zephyr(const Template& t, std::span<const Message> msgs, bool gen) {
  std::string out;
  for (const Message& m : msgs)
    if (m.role == "user" || m.role == "system" || m.role == "assistant")
      out += "<|" + m.role + "|>\n" + m.content + t.eos_token + "\n";
  if (gen && !msgs.empty()) out += "<|assistant|>\n";
  return out;
}

std::string today() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%B %d, %Y", &tm);
  return buf;
}

// Granite 3.x: a system turn always comes first; without one, the template's own default.
std::string render_granite(const Template& t, std::span<const Message> msgs, bool gen) {
  std::string system;
  if (!msgs.empty() && msgs[0].role == "system") {
    system = msgs[0].content;
    msgs = msgs.subspan(1);
  } else {
    system = "Knowledge Cutoff Date: April 2024.\nToday's Date: " + (t.date.empty() ? today() : t.date) +
             ".\nYou are Granite, developed by IBM. You are a helpful AI assistant.";
  }
  std::string out = "<|start_of_role|>system<|end_of_role|>" + system + "<|end_of_text|>\n";
  for (const Message& m : msgs) out += "<|start_of_role|>" + m.role + "<|end_of_role|>" + m.content + "<|end_of_text|>\n";
  if (gen && !msgs.empty()) out += "<|start_of_role|>assistant<|end_of_role|>";
  return out;
}

std::string render_dialogpt(const Template& t, std::span<const Message> msgs) {
  std::string out;
  for (const Message& m : msgs) out += m.content + t.eos_token;
  return out;
}

std::string render_raw(std::span<const Message> msgs) {
  std::string out;
  for (const Message& m : msgs) out += m.content;
  return out;
}

struct FormatName {
  Format format;
  std::string_view name;
};
constexpr FormatName kNames[] = {
    {Format::Raw, "raw"},         {Format::ChatML, "chatml"}, {Format::Llama2, "llama2"},
    {Format::Llama3, "llama3"},   {Format::Zephyr, "zephyr"}, {Format::Granite, "granite"},
    {Format::DialoGPT, "dialogpt"},
};

bool contains(std::string_view s, std::string_view part) { return s.find(part) != std::string_view::npos; }

// bos_token / eos_token in tokenizer_config.json: a string or an AddedToken object.
std::string token_text(const nlohmann::json& config, const char* key) {
  if (!config.contains(key)) return "";
  const auto& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::string Template::render(std::span<const Message> messages, bool add_generation_prompt) const {
  switch (format) {
    case Format::Raw: return render_raw(messages);
    case Format::ChatML: return render_chatml(*this, messages, add_generation_prompt);
    case Format::Llama2: return render_llama2(*this, messages);
    case Format::Llama3: return render_llama3(*this, messages, add_generation_prompt);
    case Format::Zephyr: return render_zephyr(*this, messages, add_generation_prompt);
    case Format::Granite: return render_granite(*this, messages, add_generation_prompt);
    case Format::DialoGPT: return render_dialogpt(*this, messages);
  }
  return "";
}

std::vector<std::string> Template::stop_tokens() const {
  switch (format) {
    case Format::ChatML: return {"<|im_end|>"};
    case Format::Llama3: return {"<|eot_id|>"};
    case Format::Granite: return {"<|end_of_text|>"};
    case Format::Llama2:
    case Format::Zephyr:
    case Format::DialoGPT: return {eos_token};
    case Format::Raw: return {};
  }
  return {};
}

std::string_view Template::name() const {
  for (const FormatName& n : kNames)
    if (n.format == format) return n.name;
  return "?";
}

std::optional<Format> format_from_name(std::string_view name) {
  for (const FormatName& n : kNames)
    if (n.name == name) return n.format;
  if (name == "none") return Format::Raw;
  return std::nullopt;
}

std::string format_names() {
  std::string s;
  for (const FormatName& n : kNames) s += (s.empty() ? "" : ", ") + std::string(n.name);
  return s;
}

std::optional<Format> recognise(std::string_view jinja) {
  if (contains(jinja, "<|im_start|>")) return Format::ChatML;
  if (contains(jinja, "<|start_header_id|>")) return Format::Llama3;
  if (contains(jinja, "<|start_of_role|>")) return Format::Granite;
  if (contains(jinja, "[INST]") && contains(jinja, "<<SYS>>")) return Format::Llama2;
  if (contains(jinja, "<|user|>") && contains(jinja, "<|assistant|>")) return Format::Zephyr;
  // DialoGPT's (GPT-2's old default): every message's content then eos, no roles at all.
  if (contains(jinja, "eos_token") && contains(jinja, "content") && !contains(jinja, "role")) return Format::DialoGPT;
  return std::nullopt;
}

std::string chatml_default_system(std::string_view jinja) {
  constexpr std::string_view open = "<|im_start|>system";
  for (size_t pos = jinja.find(open); pos != std::string_view::npos; pos = jinja.find(open, pos + 1)) {
    std::string_view rest = jinja.substr(pos + open.size());
    if (rest.starts_with("\\n")) rest.remove_prefix(2);       // an escaped newline in a Jinja literal
    else if (rest.starts_with("\n")) rest.remove_prefix(1);  // a real one
    else continue;
    const size_t end = rest.find("<|im_end|>");
    if (end == std::string_view::npos) continue;
    const std::string_view text = rest.substr(0, end);
    // Only a plain literal counts: no quote, expression or concatenation inside it.
    if (text.empty() || text.find_first_of("'\"{}+") != std::string_view::npos) continue;
    std::string out;
    for (size_t i = 0; i < text.size(); ++i) {
      if (text[i] == '\\' && i + 1 < text.size() && text[i + 1] == 'n') out += '\n', ++i;
      else out += text[i];
    }
    return out;
  }
  return "";
}

ChatConfig read_chat_config(const std::string& model_dir) {
  ChatConfig c;
  const fs::path dir(model_dir);
  const fs::path config_path = dir / "tokenizer_config.json";
  if (fs::exists(config_path)) {
    const nlohmann::json config = read_json_file(config_path.string());
    c.bos_token = token_text(config, "bos_token");
    c.eos_token = token_text(config, "eos_token");
    const auto it = config.find("chat_template");
    if (it != config.end() && it->is_string()) {
      c.jinja = it->get<std::string>();
    } else if (it != config.end() && it->is_array()) {  // named templates: the "default" one
      for (const auto& t : *it)
        if (t.is_object() && t.value("name", "") == "default" && t.contains("template") && t["template"].is_string())
          c.jinja = t["template"].get<std::string>();
    }
    if (c.jinja) c.source = config_path.string();
  }
  if (fs::exists(dir / "chat_template.jinja")) {  // transformers >= 4.43 saves it beside the config
    c.jinja = read_text(dir / "chat_template.jinja");
    c.source = (dir / "chat_template.jinja").string();
  }
  return c;
}

std::optional<Template> template_for(const std::string& model_dir, const std::string& name) {
  const ChatConfig config = read_chat_config(model_dir);
  Template t;
  t.bos_token = config.bos_token;
  t.eos_token = config.eos_token;
  if (!name.empty()) {
    const auto format = format_from_name(name);
    if (!format) throw std::runtime_error("--template: unknown format \"" + name + "\" (one of: " + format_names() + ")");
    t.format = *format;
  } else if (config.jinja) {
    const auto format = recognise(*config.jinja);
    if (!format)
      throw std::runtime_error(config.source + ": the chat_template is not one purellm recognises (it begins \"" +
                               config.jinja->substr(0, 60) + "...\"). Choose a format with --template NAME (" +
                               format_names() + "), or --raw for plain text");
    t.format = *format;
  } else {
    return std::nullopt;
  }
  if (t.format == Format::ChatML && config.jinja) t.default_system = chatml_default_system(*config.jinja);
  if ((t.format == Format::Llama2 || t.format == Format::Zephyr || t.format == Format::DialoGPT) && t.eos_token.empty())
    throw std::runtime_error(model_dir + ": the " + std::string(t.name()) +
                             " chat format needs eos_token in tokenizer_config.json");
  return t;
}

std::vector<int32_t> stop_ids(const Template& t, const Tokenizer& tokenizer) {
  std::vector<int32_t> ids;
  for (const std::string& text : t.stop_tokens())
    if (auto id = tokenizer.token_id(text)) ids.push_back(*id);
  return ids;
}

}  // namespace purellm::chat
