#include "tokenizer/decoder.hpp"

#include "tokenizer/byte_level.hpp"
#include "tokenizer/regex.hpp"
#include "tokenizer/utf8.hpp"

namespace purellm::tok {

// One decoder step. put(): in token mode one whole token, in fused mode the next piece of the
// single joined string. finish(): pass on anything held back, then finish the next stage.
class DecodeStage {
 public:
  virtual ~DecodeStage() = default;
  virtual void put(std::string_view text) = 0;
  virtual void finish() { next_->finish(); }
  void connect(DecodeStage* next) { next_ = next; }

 protected:
  DecodeStage* next_ = nullptr;
};

namespace {

// End of the chain: appends to the output; without a decoder HF joins tokens with " ".
class Sink final : public DecodeStage {
 public:
  Sink(std::string& out, bool join_with_space) : out_(out), join_with_space_(join_with_space) {}
  void put(std::string_view text) override {
    if (join_with_space_ && !first_) out_ += ' ';
    first_ = false;
    out_.append(text);
  }
  void finish() override { first_ = true; }

 private:
  std::string& out_;
  bool join_with_space_;
  bool first_ = true;
};

std::string replace_all(std::string_view text, std::string_view pattern, std::string_view content) {
  std::string out;
  size_t prev = 0;
  for (size_t pos = text.find(pattern); pos != std::string_view::npos; pos = text.find(pattern, pos + pattern.size())) {
    out.append(text, prev, pos - prev);
    out.append(content);
    prev = pos + pattern.size();
  }
  out.append(text, prev);
  return out;
}

class ReplaceToken final : public DecodeStage {
 public:
  explicit ReplaceToken(const StageSpec& s) : pattern_(s.pattern), content_(s.content) {
    if (!s.regex.empty()) regex_ = std::make_unique<Regex>(s.regex, "decoder Replace");
  }
  void put(std::string_view token) override {
    if (!regex_) {
      next_->put(replace_all(token, pattern_, content_));
      return;
    }
    std::vector<Match> matches;
    regex_->find_all(token, matches);
    std::string out;
    size_t prev = 0;
    for (const Match& m : matches) {
      out.append(token, prev, m.begin - prev);
      out += content_;
      prev = m.end;
    }
    out.append(token, prev);
    next_->put(out);
  }

 private:
  std::string pattern_, content_;
  std::unique_ptr<Regex> regex_;
};

// Replace on a joined string that arrives in pieces: holds back a tail that may be the start of
// an occurrence completed by the next piece.
class ReplaceFused final : public DecodeStage {
 public:
  explicit ReplaceFused(const StageSpec& s) : pattern_(s.pattern), content_(s.content) {}
  void put(std::string_view piece) override {
    held_.append(piece);
    std::string out;
    size_t prev = 0;
    for (size_t pos = held_.find(pattern_); pos != std::string::npos; pos = held_.find(pattern_, pos + pattern_.size())) {
      out.append(held_, prev, pos - prev);
      out += content_;
      prev = pos + pattern_.size();
    }
    size_t keep = 0;
    for (size_t k = std::min(pattern_.size() - 1, held_.size() - prev); k > 0; --k) {
      if (std::string_view(held_).substr(held_.size() - k) == std::string_view(pattern_).substr(0, k)) {
        keep = k;
        break;
      }
    }
    out.append(held_, prev, held_.size() - keep - prev);
    held_.erase(0, held_.size() - keep);
    if (!out.empty()) next_->put(out);
  }
  void finish() override {
    if (!held_.empty()) next_->put(held_);
    held_.clear();
    next_->finish();
  }

 private:
  std::string pattern_, content_, held_;
};

// HF ByteFallback: a run of "<0xNN>" tokens becomes its bytes if they are valid UTF-8, else one
// U+FFFD per byte token. The run is held until a non-byte token (or the end) closes it, because
// one more byte token can turn valid text into replacement characters.
class ByteFallback final : public DecodeStage {
 public:
  void put(std::string_view token) override {
    int byte = parse(token);
    if (byte >= 0) {
      bytes_ += static_cast<char>(byte);
      return;
    }
    flush();
    next_->put(token);
  }
  void finish() override {
    flush();
    next_->finish();
  }

 private:
  // u8::from_str_radix(&token[3..5], 16) as HF calls it: two hex digits, or "+" and one.
  static int parse(std::string_view t) {
    if (t.size() != 6 || !t.starts_with("<0x") || t[5] != '>') return -1;
    auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10 : -1; };
    int hi = t[3] == '+' ? 0 : hex(t[3]), lo = hex(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }
  void flush() {
    if (bytes_.empty()) return;
    if (is_valid_utf8(bytes_)) {
      next_->put(bytes_);
    } else {
      for (size_t i = 0; i < bytes_.size(); ++i) next_->put(kReplacementChar);
    }
    bytes_.clear();
  }
  std::string bytes_;
};

// Fuse joins all tokens: the stages after it see pieces of one string, which is exactly what
// passing each token on as it comes gives them.
class Fuse final : public DecodeStage {
 public:
  void put(std::string_view text) override { next_->put(text); }
};

// HF Strip, per token: removes up to `start` leading and `stop` trailing `content` characters.
class StripToken final : public DecodeStage {
 public:
  explicit StripToken(const StageSpec& s) : c_(s.strip_char), start_(s.start), stop_(s.stop) {}
  void put(std::string_view token) override {
    size_t begin = 0;
    for (size_t n = 0; n < start_ && token.substr(begin).starts_with(c_); ++n) begin += c_.size();
    size_t end = token.size();
    for (size_t n = 0; n < stop_ && end - begin >= c_.size() && token.substr(0, end).ends_with(c_); ++n) end -= c_.size();
    next_->put(token.substr(begin, end - begin));
  }

 private:
  std::string c_;
  size_t start_, stop_;
};

// Strip on the joined string: strips while the start is still arriving, and holds back a
// trailing run of `content` characters until a different character (or the end) arrives.
class StripFused final : public DecodeStage {
 public:
  explicit StripFused(const StageSpec& s) : c_(s.strip_char), start_(s.start), stop_(s.stop) {}
  void put(std::string_view piece) override {
    std::string out;
    for (size_t i = 0; i < piece.size();) {
      size_t begin = i;
      i += char_len(static_cast<unsigned char>(piece[i]));
      std::string_view ch = piece.substr(begin, i - begin);
      bool is_c = ch == c_;
      if (in_start_) {
        if (is_c && stripped_ < start_) {
          ++stripped_;
          continue;
        }
        in_start_ = false;
      }
      if (is_c) {
        ++run_;
        if (run_ > stop_) {  // more than stop can ever remove: let the oldest one go
          out += c_;
          --run_;
        }
        continue;
      }
      for (; run_ > 0; --run_) out += c_;
      out.append(ch);
    }
    if (!out.empty()) next_->put(out);
  }
  void finish() override {
    run_ = 0;  // at most `stop` characters are held: all of them are the stripped tail
    in_start_ = true;
    stripped_ = 0;
    next_->finish();
  }

 private:
  std::string c_;
  size_t start_, stop_;
  bool in_start_ = true;
  size_t stripped_ = 0, run_ = 0;
};

// HF Metaspace decoder: "▁" becomes " ", except in the first token, where every "▁" is dropped
// (unless prepend_scheme is "never").
class Metaspace final : public DecodeStage {
 public:
  explicit Metaspace(const StageSpec& s) : rep_(s.replacement), prepend_(s.prepend), fused_(s.fused_input) {}
  void put(std::string_view text) override {
    bool first = fused_ || index_ == 0;
    ++index_;
    next_->put(replace_all(text, rep_, first && prepend_ ? "" : " "));
  }
  void finish() override {
    index_ = 0;
    next_->finish();
  }

 private:
  std::string rep_;
  bool prepend_, fused_;
  size_t index_ = 0;
};

// HF ByteLevel decoder: each token's characters back to bytes (a token with a character
// outside the byte-level alphabet contributes its UTF-8 as is), all bytes joined and decoded
// with U+FFFD replacement.
class ByteLevel final : public DecodeStage {
 public:
  void put(std::string_view token) override {
    std::string out;
    if (auto raw = byte_level_to_bytes(token)) {
      for (char b : *raw) utf8_.push(static_cast<unsigned char>(b), out);
    } else {
      for (char b : token) utf8_.push(static_cast<unsigned char>(b), out);
    }
    if (!out.empty()) next_->put(out);
  }
  void finish() override {
    std::string out;
    utf8_.finish(out);
    if (!out.empty()) next_->put(out);
    next_->finish();
  }

 private:
  Utf8Repairer utf8_;
};

std::unique_ptr<DecodeStage> make_stage(const StageSpec& s) {
  switch (s.kind) {
    case StageSpec::Kind::ByteLevel: return std::make_unique<ByteLevel>();
    case StageSpec::Kind::Replace:
      if (s.fused_input) return std::make_unique<ReplaceFused>(s);
      return std::make_unique<ReplaceToken>(s);
    case StageSpec::Kind::ByteFallback: return std::make_unique<ByteFallback>();
    case StageSpec::Kind::Fuse: return std::make_unique<Fuse>();
    case StageSpec::Kind::Strip:
      if (s.fused_input) return std::make_unique<StripFused>(s);
      return std::make_unique<StripToken>(s);
    case StageSpec::Kind::Metaspace: return std::make_unique<Metaspace>(s);
  }
  return nullptr;
}

void flatten(const json& spec, const std::string& where, std::vector<StageSpec>& out) {
  if (spec.is_null()) return;
  std::string type = type_of(spec, where);
  StageSpec s{};
  if (type == "Sequence") {
    const json& list = require(spec, "decoders", where);
    if (!list.is_array()) fail(where + ".decoders", "expected an array");
    for (size_t i = 0; i < list.size(); ++i) flatten(list[i], where + ".decoders[" + std::to_string(i) + "]", out);
    return;
  } else if (type == "ByteLevel") {
    s.kind = StageSpec::Kind::ByteLevel;
  } else if (type == "ByteFallback") {
    s.kind = StageSpec::Kind::ByteFallback;
  } else if (type == "Fuse") {
    s.kind = StageSpec::Kind::Fuse;
  } else if (type == "Replace") {
    s.kind = StageSpec::Kind::Replace;
    PatternSpec p = get_pattern(spec, where);
    (p.is_regex ? s.regex : s.pattern) = p.text;
    if (p.text.empty()) fail(where + ".pattern", "empty pattern");
    s.content = get_string(spec, "content", where);
  } else if (type == "Strip") {
    s.kind = StageSpec::Kind::Strip;
    s.strip_char = get_string(spec, "content", where);
    size_t i = 0;
    if (s.strip_char.empty() || (next_char(s.strip_char, i), i != s.strip_char.size()))
      fail(where + ".content", "expected one character");
    int64_t start = get_int(spec, "start", 0, where), stop = get_int(spec, "stop", 0, where);
    if (start < 0 || stop < 0 || start > 1 << 20 || stop > 1 << 20) fail(where, "start / stop out of range");
    s.start = static_cast<size_t>(start);
    s.stop = static_cast<size_t>(stop);
  } else if (type == "Metaspace") {
    s.kind = StageSpec::Kind::Metaspace;
    s.replacement = spec.contains("replacement") ? get_string(spec, "replacement", where) : "\u2581";
    s.prepend = get_bool(spec, "add_prefix_space", true, where);
    if (spec.contains("prepend_scheme")) s.prepend = get_string(spec, "prepend_scheme", where) != "never";
  } else {
    fail(where, "unsupported decoder type \"" + type + "\"");
  }
  out.push_back(std::move(s));
}

}  // namespace

std::vector<StageSpec> decoder_from_json(const json& spec, const std::string& where) {
  std::vector<StageSpec> stages;
  flatten(spec, where, stages);
  bool fused = false;
  for (StageSpec& s : stages) {
    s.fused_input = fused;
    bool needs_tokens = s.kind == StageSpec::Kind::ByteLevel || s.kind == StageSpec::Kind::ByteFallback ||
                        (s.kind == StageSpec::Kind::Replace && !s.regex.empty());
    if (fused && needs_tokens)
      fail(where, "this decoder order is not supported: a ByteLevel, ByteFallback or regex Replace decoder after Fuse/ByteLevel");
    if (s.kind == StageSpec::Kind::Fuse || s.kind == StageSpec::Kind::ByteLevel) fused = true;
  }
  return stages;
}

DecodePipeline::DecodePipeline(const std::vector<StageSpec>& stages, bool no_decoder) {
  for (const StageSpec& s : stages) stages_.push_back(make_stage(s));
  stages_.push_back(std::make_unique<Sink>(out_, no_decoder));
  for (size_t i = 0; i + 1 < stages_.size(); ++i) stages_[i]->connect(stages_[i + 1].get());
}

DecodePipeline::~DecodePipeline() = default;

void DecodePipeline::put(std::string_view token) { stages_.front()->put(token); }

void DecodePipeline::finish() { stages_.front()->finish(); }

std::string DecodePipeline::take() {
  std::string out = std::move(out_);
  out_.clear();
  return out;
}

}  // namespace purellm::tok
