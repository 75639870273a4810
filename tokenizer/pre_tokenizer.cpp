#include "tokenizer/pre_tokenizer.hpp"

#include <algorithm>
#include <functional>
#include <string_view>

#include "tokenizer/byte_level.hpp"
#include "tokenizer/regex.hpp"
#include "tokenizer/unicode.hpp"
#include "tokenizer/utf8.hpp"

namespace purellm::tok {

namespace {

// GPT-2's pre-tokenizer regex (HF ByteLevel with use_regex true).
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Qwen2's (Qwen2Tokenizer PRETOKENIZE_REGEX).
constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// HF SplitDelimiterBehavior: what happens to the matched pieces of a split.
enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

Behavior parse_behavior(const json& spec, Behavior fallback, const std::string& where) {
  auto it = spec.find("behavior");
  if (it == spec.end() || it->is_null()) return fallback;
  std::string b = it->is_string() ? it->get<std::string>() : "";
  if (b == "Removed") return Behavior::Removed;
  if (b == "Isolated") return Behavior::Isolated;
  if (b == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::MergedWithNext;
  if (b == "Contiguous") return Behavior::Contiguous;
  fail(where + ".behavior", "unknown split behavior \"" + it->dump() + "\"");
}

// One piece of a span: a match of the split pattern or the text between matches.
struct Piece {
  size_t begin, end;
  bool is_match;
};

// HF NormalizedString::split: turns the pieces covering a span into the kept ranges.
void apply_behavior(const std::vector<Piece>& pieces, Behavior behavior, std::vector<Piece>& out) {
  out.clear();
  bool previous_match = false;
  switch (behavior) {
    case Behavior::Isolated:
      out = pieces;
      break;
    case Behavior::Removed:
      for (const Piece& p : pieces)
        if (!p.is_match) out.push_back(p);
      break;
    case Behavior::Contiguous:
      for (const Piece& p : pieces) {
        if (p.is_match == previous_match && !out.empty()) out.back().end = p.end;
        else out.push_back(p);
        previous_match = p.is_match;
      }
      break;
    case Behavior::MergedWithPrevious:
      for (const Piece& p : pieces) {
        if (p.is_match && !previous_match && !out.empty()) out.back().end = p.end;
        else out.push_back(p);
        previous_match = p.is_match;
      }
      break;
    case Behavior::MergedWithNext:
      for (auto p = pieces.rbegin(); p != pieces.rend(); ++p) {
        if (p->is_match && !previous_match && !out.empty()) out.back().begin = p->begin;
        else out.push_back(*p);
        previous_match = p->is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
  }
}

// Pieces from regex matches: the matches and the gaps between them.
void pieces_from_matches(const std::vector<Match>& matches, size_t size, std::vector<Piece>& out) {
  out.clear();
  size_t prev = 0;
  for (const Match& m : matches) {
    if (prev != m.begin) out.push_back({prev, m.begin, false});
    out.push_back({m.begin, m.end, true});
    prev = m.end;
  }
  if (prev != size) out.push_back({prev, size, false});
}

// Pieces from a character predicate: every matching character is a piece of its own.
template <class Pred>
void pieces_from_chars(std::string_view text, Pred pred, std::vector<Piece>& out) {
  out.clear();
  size_t last = 0;
  for (size_t i = 0; i < text.size();) {
    size_t start = i;
    if (pred(next_char(text, i))) {
      if (last < start) out.push_back({last, start, false});
      out.push_back({start, i, true});
      last = i;
    }
  }
  if (last < text.size()) out.push_back({last, text.size(), false});
}

// A pre-tokenizer that only splits: finds pieces in each word, keeps ranges per behavior.
class Splitter : public PreTokenizer {
 public:
  Splitter(Behavior behavior, bool invert) : behavior_(behavior), invert_(invert) {}
  void apply(Words& words) const override {
    thread_local std::vector<Piece> pieces, kept;
    std::vector<Span> spans;
    spans.reserve(words.spans.size() * 2);
    for (const Span& s : words.spans) {
      std::string_view text(words.text.data() + s.begin, s.end - s.begin);
      find_pieces(text, pieces);
      if (invert_)
        for (Piece& p : pieces) p.is_match = !p.is_match;
      apply_behavior(pieces, behavior_, kept);
      for (const Piece& p : kept)
        if (p.end > p.begin) spans.push_back({s.begin + p.begin, s.begin + p.end, s.at_origin && p.begin == 0});
    }
    words.spans = std::move(spans);
  }

 protected:
  virtual void find_pieces(std::string_view text, std::vector<Piece>& out) const = 0;

 private:
  Behavior behavior_;
  bool invert_;
};

class RegexSplit final : public Splitter {
 public:
  RegexSplit(std::string_view pattern, Behavior b, bool invert, const std::string& where)
      : Splitter(b, invert), regex_(pattern, where) {}

 protected:
  void find_pieces(std::string_view text, std::vector<Piece>& out) const override {
    thread_local std::vector<Match> matches;
    matches.clear();
    regex_.find_all(text, matches);
    pieces_from_matches(matches, text.size(), out);
  }

 private:
  Regex regex_;
};

class LiteralSplit final : public Splitter {
 public:
  LiteralSplit(std::string literal, Behavior b, bool invert) : Splitter(b, invert), literal_(std::move(literal)) {}

 protected:
  void find_pieces(std::string_view text, std::vector<Piece>& out) const override {
    thread_local std::vector<Match> matches;
    matches.clear();
    for (size_t pos = text.find(literal_); pos != std::string_view::npos; pos = text.find(literal_, pos + literal_.size()))
      matches.push_back({pos, pos + literal_.size()});
    pieces_from_matches(matches, text.size(), out);
  }

 private:
  std::string literal_;
};

class CharSplit final : public Splitter {
 public:
  CharSplit(std::function<bool(char32_t)> pred, Behavior b) : Splitter(b, false), pred_(std::move(pred)) {}

 protected:
  void find_pieces(std::string_view text, std::vector<Piece>& out) const override { pieces_from_chars(text, pred_, out); }

 private:
  std::function<bool(char32_t)> pred_;
};

// Rewrites every word with `transform(word, at_origin, out)` into a fresh text.
template <class F>
void rewrite(Words& words, F transform) {
  std::string text;
  text.reserve(words.text.size() + words.spans.size() * 3);
  std::vector<Span> spans;
  spans.reserve(words.spans.size());
  for (const Span& s : words.spans) {
    size_t begin = text.size();
    transform(std::string_view(words.text.data() + s.begin, s.end - s.begin), s.at_origin, text);
    if (text.size() > begin) spans.push_back({begin, text.size(), s.at_origin});
  }
  words.text = std::move(text);
  words.spans = std::move(spans);
}

class ByteLevel final : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, bool use_regex) : add_prefix_space_(add_prefix_space) {
    if (use_regex) regex_ = std::make_unique<RegexSplit>(kGpt2Pattern, Behavior::Isolated, false, "ByteLevel regex");
  }
  void set_last(bool last) { last_ = last; }
  void apply(Words& words) const override {
    if (add_prefix_space_) {
      rewrite(words, [](std::string_view w, bool, std::string& out) {
        if (w.front() != ' ') out += ' ';
        out.append(w);
      });
    }
    if (regex_) regex_->apply(words);
    if (!last_) {
      rewrite(words, [](std::string_view w, bool, std::string& out) { out += bytes_to_byte_level(w); });
      words.byte_mapped = true;
    }
  }

 private:
  bool add_prefix_space_;
  bool last_ = true;
  std::unique_ptr<RegexSplit> regex_;
};

enum class PrependScheme { Always, First, Never };

class Metaspace final : public PreTokenizer {
 public:
  Metaspace(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme) {
    if (split) splitter_ = std::make_unique<LiteralSplit>(replacement_, Behavior::MergedWithNext, false);
  }
  void apply(Words& words) const override {
    rewrite(words, [&](std::string_view w, bool at_origin, std::string& out) {
      size_t begin = out.size();
      for (char c : w) {
        if (c == ' ') out += replacement_;
        else out += c;
      }
      bool starts = std::string_view(out).substr(begin).starts_with(replacement_);
      bool prepend = scheme_ == PrependScheme::Always || (scheme_ == PrependScheme::First && at_origin);
      if (prepend && !starts) out.insert(begin, replacement_);
    });
    if (splitter_) splitter_->apply(words);
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  std::unique_ptr<LiteralSplit> splitter_;
};

void flatten(const json& spec, const std::string& where, std::vector<std::unique_ptr<PreTokenizer>>& out);

std::unique_ptr<PreTokenizer> make_step(const json& spec, const std::string& type, const std::string& where) {
  if (type == "ByteLevel")
    return std::make_unique<ByteLevel>(get_bool(spec, "add_prefix_space", true, where), get_bool(spec, "use_regex", true, where));
  if (type == "Split") {
    PatternSpec p = get_pattern(spec, where);
    Behavior b = parse_behavior(spec, Behavior::Isolated, where);
    bool invert = get_bool(spec, "invert", false, where);
    if (p.is_regex) return std::make_unique<RegexSplit>(p.text, b, invert, where + ".pattern");
    if (p.text.empty()) fail(where, "Split pattern is empty");
    return std::make_unique<LiteralSplit>(p.text, b, invert);
  }
  if (type == "Digits") {
    Behavior b = get_bool(spec, "individual_digits", false, where) ? Behavior::Isolated : Behavior::Contiguous;
    return std::make_unique<CharSplit>(is_numeric, b);
  }
  if (type == "Punctuation") return std::make_unique<CharSplit>(is_punctuation, parse_behavior(spec, Behavior::Isolated, where));
  if (type == "WhitespaceSplit") return std::make_unique<CharSplit>(is_whitespace, Behavior::Removed);
  if (type == "Whitespace") return std::make_unique<RegexSplit>(R"(\w+|[^\w\s]+)", Behavior::Removed, true, where);
  if (type == "CharDelimiterSplit") {
    std::string d = get_string(spec, "delimiter", where);
    size_t i = 0;
    if (d.empty() || (next_char(d, i), i != d.size())) fail(where + ".delimiter", "expected one character");
    return std::make_unique<LiteralSplit>(d, Behavior::Removed, false);
  }
  if (type == "Metaspace") {
    std::string rep = spec.contains("replacement") ? get_string(spec, "replacement", where) : "\u2581";
    PrependScheme scheme = get_bool(spec, "add_prefix_space", true, where) ? PrependScheme::Always : PrependScheme::Never;
    if (spec.contains("prepend_scheme")) {
      std::string s = get_string(spec, "prepend_scheme", where);
      if (s == "always") scheme = PrependScheme::Always;
      else if (s == "first") scheme = PrependScheme::First;
      else if (s == "never") scheme = PrependScheme::Never;
      else fail(where + ".prepend_scheme", "unknown value \"" + s + "\"");
    }
    return std::make_unique<Metaspace>(rep, scheme, get_bool(spec, "split", true, where));
  }
  fail(where, "unsupported pre_tokenizer type \"" + type + "\"");
}

void flatten(const json& spec, const std::string& where, std::vector<std::unique_ptr<PreTokenizer>>& out) {
  if (spec.is_null()) return;
  std::string type = type_of(spec, where);
  if (type == "BertPreTokenizer") {
    out.push_back(std::make_unique<CharSplit>(is_whitespace, Behavior::Removed));
    out.push_back(std::make_unique<CharSplit>(is_punctuation, Behavior::Isolated));
    return;
  }
  if (type != "Sequence") {
    out.push_back(make_step(spec, type, where));
    return;
  }
  const json& list = require(spec, "pretokenizers", where);
  if (!list.is_array()) fail(where + ".pretokenizers", "expected an array");
  for (size_t i = 0; i < list.size(); ++i) flatten(list[i], where + ".pretokenizers[" + std::to_string(i) + "]", out);
}

}  // namespace

void PreTokenizerChain::finalize(const std::string& where) {
  bool mapped = false;
  for (size_t i = 0; i < steps_.size(); ++i) {
    bool modifies = dynamic_cast<Metaspace*>(steps_[i].get()) != nullptr;
    if (auto* bl = dynamic_cast<ByteLevel*>(steps_[i].get())) {
      if (byte_level_) fail(where, "two ByteLevel pre-tokenizers");
      byte_level_ = true;
      bl->set_last(i + 1 == steps_.size());
      mapped = i + 1 != steps_.size();
    } else if (mapped && modifies) {
      fail(where, "a Metaspace pre-tokenizer after ByteLevel is not supported");
    }
  }
}

PreTokenizerChain PreTokenizerChain::from_json(const json& spec, const std::string& where) {
  PreTokenizerChain chain;
  flatten(spec, where, chain.steps_);
  chain.finalize(where);
  return chain;
}

PreTokenizerChain PreTokenizerChain::gpt2(bool add_prefix_space) {
  PreTokenizerChain chain;
  chain.steps_.push_back(std::make_unique<ByteLevel>(add_prefix_space, true));
  chain.finalize("gpt2 pre-tokenizer");
  return chain;
}

PreTokenizerChain PreTokenizerChain::qwen2() {
  PreTokenizerChain chain;
  chain.steps_.push_back(std::make_unique<RegexSplit>(kQwen2Pattern, Behavior::Isolated, false, "qwen2 pre-tokenizer"));
  chain.steps_.push_back(std::make_unique<ByteLevel>(false, false));
  chain.finalize("qwen2 pre-tokenizer");
  return chain;
}

void PreTokenizerChain::run(std::string text, bool at_origin, Words& out) const {
  out.spans.clear();
  out.byte_mapped = false;
  if (!text.empty()) out.spans.push_back({0, text.size(), at_origin});
  out.text = std::move(text);
  for (const auto& step : steps_) step->apply(out);
  if (out.byte_mapped) {
    // Steps after ByteLevel only split, so every character is in the byte-level alphabet.
    rewrite(out, [](std::string_view w, bool, std::string& raw) { raw += *byte_level_to_bytes(w); });
    out.byte_mapped = false;
  }
}

}  // namespace purellm::tok
