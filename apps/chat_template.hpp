// Chat prompt formats. A chat model's tokenizer_config.json carries a Jinja `chat_template`;
// instead of a Jinja interpreter, purellm recognises the template by its distinctive markers
// and renders the same text with a small built-in function per format:
//
//   chatml    <|im_start|>user\n...<|im_end|>\n<|im_start|>assistant\n   SmolLM2, Qwen2.5 (their
//             default system message is read from the template itself)
//   llama2    <s>[INST] <<SYS>>\n...\n<</SYS>>\n\n... [/INST] ... </s>       Llama-2-chat
//   llama3    <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n...<|eot_id|>
//   zephyr    <|user|>\n...</s>\n<|assistant|>\n                               TinyLlama-Chat, Zephyr
//   granite   <|start_of_role|>user<|end_of_role|>...<|end_of_text|>\n        Granite 3.x
//   dialogpt  each turn's text followed by the eos token                       DialoGPT
//   raw       the messages' text as is (base models; the tokenizer adds its BOS)
//
// render() follows the transformers semantics of each template exactly (its output is what
// apply_chat_template(..., tokenize=False) gives); tests/data/chat_templates.json pins it.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.hpp"

namespace purellm::chat {

struct Message {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

enum class Format { Raw, ChatML, Llama2, Llama3, Zephyr, Granite, DialoGPT };

struct Template {
  Format format = Format::Raw;
  std::string bos_token, eos_token;  // their text, from tokenizer_config.json
  std::string default_system;        // chatml: used when the conversation has no system message
  std::string date;                  // granite's default system message names today ("" = today)

  // The conversation as prompt text; with add_generation_prompt, followed by the opening of
  // the assistant's reply. Throws std::invalid_argument when the format cannot express the
  // conversation (llama2: roles must alternate user/assistant).
  std::string render(std::span<const Message> messages, bool add_generation_prompt) const;
  // Token texts that end an assistant turn, besides the model's eos ids.
  std::vector<std::string> stop_tokens() const;
  // Only raw text lets the tokenizer's post-processor add BOS; the other formats write their
  // own special tokens (transformers encodes a rendered chat with add_special_tokens=False).
  bool add_special() const { return format == Format::Raw; }
  std::string_view name() const;
};

std::optional<Format> format_from_name(std::string_view name);
std::string format_names();  // "raw, chatml, llama2, ..." for messages

// Which built-in format a Jinja chat_template is; nullopt when none is recognised.
std::optional<Format> recognise(std::string_view jinja);
// ChatML templates that insert a system message when there is none: that message's text.
std::string chatml_default_system(std::string_view jinja);

// What a model folder says about chat: chat_template.jinja or tokenizer_config.json's
// chat_template, and the bos/eos token texts.
struct ChatConfig {
  std::optional<std::string> jinja;
  std::string source;  // the file the template came from
  std::string bos_token, eos_token;
};
ChatConfig read_chat_config(const std::string& model_dir);

// The template for a model folder. `name` (--template; may be empty) overrides recognition.
// nullopt when the model has no chat template and no name was given. Throws a message that
// names the file and suggests --template when the model's template is not recognised.
std::optional<Template> template_for(const std::string& model_dir, const std::string& name);

// Ids of the template's stop tokens in this tokenizer (texts it does not know are skipped).
std::vector<int32_t> stop_ids(const Template& t, const Tokenizer& tokenizer);

}  // namespace purellm::chat
