#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/regex.hpp"

#include <pcre2.h>

#include "tokenizer/tokenizer.hpp"
#include "tokenizer/utf8.hpp"

namespace purellm::tok {

namespace {

constexpr std::string_view kWordClass = "\\p{L}\\p{M}\\p{Nd}\\p{Nl}\\p{Pc}";

// Per-thread PCRE2 scratch: match data (one ovector pair is all find_all reads) and a JIT
// stack larger than the 32 KiB default, so long runs of one class never overflow it.
struct MatchScratch {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  MatchScratch() { pcre2_jit_stack_assign(context, nullptr, stack); }
  ~MatchScratch() {
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(stack);
    pcre2_match_data_free(data);
  }
};

MatchScratch& scratch() {
  thread_local MatchScratch s;
  return s;
}

}  // namespace

std::string translate_pattern(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 32);
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      char e = p[i + 1];
      ++i;
      switch (e) {
        case 's': out += "\\p{White_Space}"; continue;
        case 'S': out += "\\P{White_Space}"; continue;
        case 'd': out += "\\p{Nd}"; continue;
        case 'D': out += "\\P{Nd}"; continue;
        case 'w':
          if (in_class) out += kWordClass;
          else out.append("[").append(kWordClass).append("]");
          continue;
        case 'W':
          if (in_class) throw TokenizerError("regex: \\W inside a character class is not supported: " + std::string(p));
          out.append("[^").append(kWordClass).append("]");
          continue;
        default:
          out += '\\';
          out += e;
          continue;
      }
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

struct Regex::Code {
  pcre2_code* re = nullptr;
  ~Code() { pcre2_code_free(re); }
};

Regex::Regex(std::string_view pattern, const std::string& where) : code_(new Code), where_(where) {
  std::string translated = translate_pattern(pattern);
  int err = 0;
  PCRE2_SIZE offset = 0;
  code_->re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                            PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &err, &offset, nullptr);
  if (!code_->re) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    throw TokenizerError(where + ": invalid regex /" + std::string(pattern) + "/ at offset " +
                         std::to_string(offset) + ": " + reinterpret_cast<char*>(msg));
  }
  pcre2_jit_compile(code_->re, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is unavailable
}

Regex::~Regex() = default;

void Regex::find_all(std::string_view text, std::vector<Match>& out) const {
  MatchScratch& s = scratch();
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos <= text.size()) {
    int rc = pcre2_match(code_->re, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, s.data, s.context);
    if (rc == PCRE2_ERROR_NOMATCH) return;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      throw TokenizerError(where_ + ": regex match failed: " + reinterpret_cast<char*>(msg));
    }
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.data);
    out.push_back({ov[0], ov[1]});
    if (ov[1] > ov[0]) {
      pos = ov[1];
    } else {
      if (ov[1] >= text.size()) return;
      pos = ov[1] + char_len(static_cast<unsigned char>(text[ov[1]]));
    }
  }
}

}  // namespace purellm::tok
