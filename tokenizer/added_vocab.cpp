#include "tokenizer/added_vocab.hpp"

#include <algorithm>
#include <cstring>

#include "tokenizer/normalizer.hpp"
#include "tokenizer/unicode.hpp"
#include "tokenizer/utf8.hpp"

namespace purellm::tok {

namespace {

// The last character of text[0, end), valid UTF-8.
char32_t char_before(std::string_view text, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  return next_char(text, start);
}

// HF's regexes \w$ and ^\w.
bool ends_with_word(std::string_view text, size_t end) { return end > 0 && is_word_char(char_before(text, end)); }
bool starts_with_word(std::string_view text, size_t begin) {
  if (begin >= text.size()) return false;
  size_t i = begin;
  return is_word_char(next_char(text, i));
}

// Start of the whitespace run that ends at `end` (HF: \s*$ on text[..end]).
size_t whitespace_run_start(std::string_view text, size_t end) {
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
    size_t i = start;
    if (!is_whitespace(next_char(text, i))) break;
    end = start;
  }
  return end;
}

// End of the whitespace run that starts at `begin` (HF: ^\s* on text[begin..]).
size_t whitespace_run_end(std::string_view text, size_t begin) {
  while (begin < text.size()) {
    size_t i = begin;
    if (!is_whitespace(next_char(text, i))) break;
    begin = i;
  }
  return begin;
}

}  // namespace

void AddedVocab::add_pattern(Matcher& m, std::string pattern, size_t token) {
  if (pattern.empty()) return;  // HF ignores empty added tokens
  m.token_index.push_back(token);
  m.patterns.push_back(std::move(pattern));
}

void AddedVocab::build(std::vector<AddedToken> tokens, const Normalizer* normalizer) {
  tokens_ = std::move(tokens);
  raw_ = Matcher{};
  normalized_ = Matcher{};
  // HF builds its matchers from the special tokens first, then the others.
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < tokens_.size(); ++i) {
      const AddedToken& t = tokens_[i];
      if (t.special != (pass == 0)) continue;
      if (!t.normalized) {
        add_pattern(raw_, t.content, i);
      } else {
        std::string pattern = t.content;
        if (normalizer) normalizer->apply(pattern);
        add_pattern(normalized_, std::move(pattern), i);
      }
    }
  }
  for (Matcher* m : {&raw_, &normalized_}) {
    for (uint32_t i = 0; i < m->patterns.size(); ++i)
      m->by_first[static_cast<unsigned char>(m->patterns[i][0])].push_back(i);
    for (auto& list : m->by_first)
      std::stable_sort(list.begin(), list.end(),
                       [&](uint32_t a, uint32_t b) { return m->patterns[a].size() > m->patterns[b].size(); });
  }
}

void AddedVocab::split(std::string_view text, bool normalized, std::vector<Segment>& out) const {
  out.clear();
  if (text.empty()) return;
  const Matcher& m = normalized ? normalized_ : raw_;
  if (m.empty()) {
    out.push_back({0, text.size(), -1});
    return;
  }
  find(m, text, out);
}

// HF find_matches: walk the leftmost-longest non-overlapping matches; drop single_word tokens
// inside words; widen lstrip / rstrip tokens over neighbouring whitespace.
void AddedVocab::find(const Matcher& m, std::string_view text, std::vector<Segment>& out) const {
  size_t start_offset = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const auto& candidates = m.by_first[static_cast<unsigned char>(text[pos])];
    const uint32_t* hit = nullptr;
    for (const uint32_t& c : candidates) {
      const std::string& p = m.patterns[c];
      if (p.size() <= text.size() - pos && std::memcmp(text.data() + pos, p.data(), p.size()) == 0) {
        hit = &c;
        break;
      }
    }
    if (!hit) {
      ++pos;
      continue;
    }
    const AddedToken& t = tokens_[m.token_index[*hit]];
    size_t start = pos, stop = pos + m.patterns[*hit].size();
    pos = stop;
    if (t.single_word && (ends_with_word(text, start) || starts_with_word(text, stop))) continue;
    if (t.lstrip) start = std::max(whitespace_run_start(text, start), start_offset);
    if (t.rstrip) stop = whitespace_run_end(text, stop);
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, t.id});
    start_offset = stop;
  }
  if (start_offset < text.size()) out.push_back({start_offset, text.size(), -1});
}

}  // namespace purellm::tok
