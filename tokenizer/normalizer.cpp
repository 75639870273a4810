#include "tokenizer/normalizer.hpp"

#include <vector>

#include "tokenizer/regex.hpp"
#include "tokenizer/unicode.hpp"
#include "tokenizer/utf8.hpp"

namespace purellm::tok {

namespace {

class Sequence final : public Normalizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  void apply(std::string& text) const override {
    for (const auto& s : steps_) s->apply(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class UnicodeForm final : public Normalizer {
 public:
  explicit UnicodeForm(NormalForm form) : form_(form) {}
  void apply(std::string& text) const override { text = normalize(text, form_); }

 private:
  NormalForm form_;
};

class Lowercase final : public Normalizer {
 public:
  void apply(std::string& text) const override { text = lowercase(text); }
};

// HF Prepend / Append only touch non-empty text.
class Prepend final : public Normalizer {
 public:
  explicit Prepend(std::string s) : s_(std::move(s)) {}
  void apply(std::string& text) const override {
    if (!text.empty()) text.insert(0, s_);
  }

 private:
  std::string s_;
};

class Append final : public Normalizer {
 public:
  explicit Append(std::string s) : s_(std::move(s)) {}
  void apply(std::string& text) const override {
    if (!text.empty()) text += s_;
  }

 private:
  std::string s_;
};

// Replaces every non-overlapping occurrence (leftmost first) of a string or regex.
class Replace final : public Normalizer {
 public:
  Replace(const PatternSpec& p, std::string content, const std::string& where) : content_(std::move(content)) {
    if (p.is_regex) regex_ = std::make_unique<Regex>(p.text, where);
    else literal_ = p.text;
    if (!p.is_regex && literal_.empty()) fail(where, "Replace pattern is empty");
  }
  void apply(std::string& text) const override {
    std::vector<Match> matches;
    if (regex_) {
      regex_->find_all(text, matches);
    } else {
      for (size_t pos = text.find(literal_); pos != std::string::npos; pos = text.find(literal_, pos + literal_.size()))
        matches.push_back({pos, pos + literal_.size()});
    }
    if (matches.empty()) return;
    std::string out;
    out.reserve(text.size() + matches.size() * content_.size());
    size_t prev = 0;
    for (const Match& m : matches) {
      out.append(text, prev, m.begin - prev);
      out += content_;
      prev = m.end;
    }
    out.append(text, prev);
    text = std::move(out);
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
  std::string content_;
};

class Strip final : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  void apply(std::string& text) const override {
    size_t begin = 0, end = text.size();
    if (left_) {
      while (begin < end) {
        size_t i = begin;
        if (!is_whitespace(next_char(text, i))) break;
        begin = i;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
        size_t i = start;
        if (!is_whitespace(next_char(text, i))) break;
        end = start;
      }
    }
    text = text.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

class StripAccents final : public Normalizer {
 public:
  void apply(std::string& text) const override {
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size();) {
      size_t start = i;
      if (!is_nonspacing_mark(next_char(text, i))) out.append(text, start, i - start);
    }
    text = std::move(out);
  }
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const json& spec, const std::string& where) {
  if (spec.is_null()) return nullptr;
  std::string type = type_of(spec, where);
  if (type == "Sequence") {
    const json& list = require(spec, "normalizers", where);
    if (!list.is_array()) fail(where + ".normalizers", "expected an array");
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      auto step = make_normalizer(list[i], where + ".normalizers[" + std::to_string(i) + "]");
      if (step) steps.push_back(std::move(step));
    }
    return std::make_unique<Sequence>(std::move(steps));
  }
  if (type == "NFC") return std::make_unique<UnicodeForm>(NormalForm::NFC);
  if (type == "NFD") return std::make_unique<UnicodeForm>(NormalForm::NFD);
  if (type == "NFKC") return std::make_unique<UnicodeForm>(NormalForm::NFKC);
  if (type == "NFKD") return std::make_unique<UnicodeForm>(NormalForm::NFKD);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "Prepend") return std::make_unique<Prepend>(get_string(spec, "prepend", where));
  if (type == "Append") return std::make_unique<Append>(get_string(spec, "append", where));
  if (type == "Replace") return std::make_unique<Replace>(get_pattern(spec, where), get_string(spec, "content", where), where);
  if (type == "Strip")
    return std::make_unique<Strip>(get_bool(spec, "strip_left", true, where), get_bool(spec, "strip_right", true, where));
  if (type == "StripAccents") return std::make_unique<StripAccents>();
  fail(where, "unsupported normalizer type \"" + type + "\"");
}

}  // namespace purellm::tok
