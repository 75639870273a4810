#include "tokenizer/bpe.hpp"

#include <cstdio>
#include <algorithm>
#include <functional>

#include "tokenizer/byte_level.hpp"
#include "tokenizer/utf8.hpp"

namespace purellm::tok {

void MergeTable::reserve(size_t n) {
  size_t cap = 16;
  shift_ = 60;
  while (cap < 2 * n) {
    cap <<= 1;
    --shift_;
  }
  keys_.assign(cap, 0);
  rules_.assign(cap, Rule{});
  mask_ = cap - 1;
  size_ = 0;
}

void MergeTable::insert(int32_t left, int32_t right, Rule rule) {
  if (2 * (size_ + 1) > keys_.size()) {
    // Grow: rehash everything into a table twice the size.
    std::vector<uint64_t> keys = std::move(keys_);
    std::vector<Rule> rules = std::move(rules_);
    reserve(std::max<size_t>(size_ + 1, keys.size()));
    for (size_t i = 0; i < keys.size(); ++i)
      if (keys[i]) insert(static_cast<int32_t>((keys[i] - 1) >> 32), static_cast<int32_t>((keys[i] - 1) & 0xFFFFFFFFu), rules[i]);
  }
  uint64_t key = pack(left, right);
  size_t i = slot(key);
  while (keys_[i] != 0 && keys_[i] != key) i = (i + 1) & mask_;
  if (keys_[i] == 0) ++size_;
  keys_[i] = key;
  rules_[i] = rule;
}

BpeModel::BpeModel(std::vector<std::pair<std::string, int32_t>> vocab, std::vector<MergeSpec> merges, BpeOptions options,
                   bool byte_level_input, const std::string& where)
    : options_(std::move(options)), byte_level_input_(byte_level_input) {
  if (vocab.size() > kMaxVocab)
    fail(where, "vocab has " + std::to_string(vocab.size()) + " tokens, more than the limit of " + std::to_string(kMaxVocab));
  if (merges.size() > kMaxMerges)
    fail(where, std::to_string(merges.size()) + " merges, more than the limit of " + std::to_string(kMaxMerges));

  int32_t max_id = -1;
  for (const auto& [token, id] : vocab) {
    if (id < 0 || static_cast<size_t>(id) >= kMaxVocab)
      fail(where, "token \"" + token + "\" has id " + std::to_string(id) + ", outside [0, " + std::to_string(kMaxVocab) + ")");
    max_id = std::max(max_id, id);
  }
  tokens_.assign(static_cast<size_t>(max_id + 1), std::string());
  std::vector<bool> used(tokens_.size(), false);
  vocab_.reserve(vocab.size());
  for (auto& [token, id] : vocab) {
    if (used[id]) fail(where, "id " + std::to_string(id) + " is used by both \"" + tokens_[id] + "\" and \"" + token + "\"");
    used[id] = true;
    tokens_[id] = token;
    vocab_.emplace(std::move(token), id);
  }
  if (byte_level_input_) {
    raw_vocab_.reserve(vocab_.size());
    for (const auto& [token, id] : vocab_)
      if (auto raw = byte_level_to_bytes(token)) raw_vocab_.emplace(std::move(*raw), id);
  }

  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) add_merge(merges[rank], rank, where);

  unit_prefix_ = options_.continuing_subword_prefix;
  unit_suffix_ = options_.end_of_word_suffix;
  if (byte_level_input_) {
    auto p = byte_level_to_bytes(unit_prefix_), q = byte_level_to_bytes(unit_suffix_);
    if (!p || !q) fail(where, "continuing_subword_prefix / end_of_word_suffix outside the byte-level alphabet");
    unit_prefix_ = *p;
    unit_suffix_ = *q;
  }
  if (options_.unk_token) {
    auto unk = id_of(*options_.unk_token);
    if (!unk) fail(where, "unk_token \"" + *options_.unk_token + "\" is not in the vocabulary");
    unk_id_ = *unk;
  }
  // Character pairs that occur inside some token, for merge_in_pieces (character-level models
  // without prefix / suffix only: there a token's string is the characters it covers).
  if (!byte_level_input_ && unit_prefix_.empty() && unit_suffix_.empty()) {
    for (const auto& [token, id] : vocab_) {
      char32_t prev = 0;
      for (size_t i = 0; i < token.size();) {
        bool first = i == 0;
        char32_t c = next_char(token, i);
        if (!first) joined_pairs_.insert(pair_key(prev, c));
        prev = c;
      }
    }
  }
  const ByteLevelMap& bl = ByteLevelMap::get();
  for (int b = 0; b < 256; ++b) {
    byte_ids_[b] = -1;
    if (byte_level_input_) {
      auto id = id_of(bl.byte_to_utf8[b]);
      byte_ids_[b] = id ? *id : -1;
    }
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    auto fb = id_of(name);
    fallback_ids_[b] = fb ? *fb : -1;
  }
}

// HF keys merges by the ids of both sides; the merged token is left + right without the right
// side's continuing_subword_prefix. On failure `missing` (if given) names the absent token.
std::optional<BpeModel::MergeIds> BpeModel::merge_ids(std::string_view left, std::string_view right,
                                                      std::string* missing) const {
  auto l = id_of(left), r = id_of(right);
  if (!l || !r) {
    if (missing) *missing = "token \"" + std::string(l ? right : left) + "\" is not in the vocabulary";
    return std::nullopt;
  }
  const std::string& prefix = options_.continuing_subword_prefix;
  std::string merged(left);
  merged.append(right.starts_with(prefix) ? right.substr(prefix.size()) : right);
  auto m = id_of(merged);
  if (!m) {
    if (missing) *missing = "merged token \"" + merged + "\" is not in the vocabulary";
    return std::nullopt;
  }
  return MergeIds{*l, *r, *m};
}

void BpeModel::add_merge(const MergeSpec& m, size_t rank, const std::string& where) {
  auto what = [&] { return where + ": merges[" + std::to_string(rank) + "]"; };  // built only on failure
  std::string missing;
  std::optional<MergeIds> ids;
  if (m.line.empty()) {
    ids = merge_ids(m.left, m.right, &missing);
    if (!ids) fail(what() + " [\"" + m.left + "\", \"" + m.right + "\"]", missing);
  } else {
    // "left right": HF splits at the first space. A token that contains a space makes the line
    // ambiguous; then the one split whose sides and merge are all tokens is the rule (the staged
    // Llama-2 tokenizer.json spells U+00A0 as a space in four tokens and three merges).
    std::string_view line = m.line;
    size_t sp = line.find(' ');
    if (sp == std::string_view::npos) fail(what(), "merge \"" + m.line + "\" is not two tokens separated by a space");
    ids = merge_ids(line.substr(0, sp), line.substr(sp + 1), &missing);
    if (!ids) {
      int found = 0;
      for (size_t p = line.find(' ', sp + 1); p != std::string_view::npos; p = line.find(' ', p + 1)) {
        if (auto alt = merge_ids(line.substr(0, p), line.substr(p + 1), nullptr); alt && ++found == 1) ids = alt;
      }
      if (found != 1) fail(what() + " \"" + m.line + "\"", missing);
    }
  }
  merges_.insert(ids->left, ids->right, {static_cast<int32_t>(rank), ids->merged});
}

std::unique_ptr<BpeModel> BpeModel::from_json(const json& model, bool byte_level_input, const std::string& where) {
  const json& vocab_json = require(model, "vocab", where);
  if (!vocab_json.is_object()) fail(where + ".vocab", "expected an object of token -> id");
  if (vocab_json.size() > kMaxVocab)
    fail(where + ".vocab", std::to_string(vocab_json.size()) + " tokens, more than the limit of " + std::to_string(kMaxVocab));
  std::vector<std::pair<std::string, int32_t>> vocab;
  vocab.reserve(vocab_json.size());
  for (auto it = vocab_json.begin(); it != vocab_json.end(); ++it) {
    if (!it.value().is_number_integer()) fail(where + ".vocab[\"" + it.key() + "\"]", "expected an integer id");
    int64_t id = it.value().get<int64_t>();
    if (id < 0 || id >= static_cast<int64_t>(kMaxVocab))
      fail(where + ".vocab[\"" + it.key() + "\"]", "id " + std::to_string(id) + " out of range");
    vocab.emplace_back(it.key(), static_cast<int32_t>(id));
  }

  std::vector<MergeSpec> merges;
  auto mit = model.find("merges");
  if (mit != model.end() && !mit->is_null()) {
    if (!mit->is_array()) fail(where + ".merges", "expected an array");
    if (mit->size() > kMaxMerges)
      fail(where + ".merges", std::to_string(mit->size()) + " merges, more than the limit of " + std::to_string(kMaxMerges));
    merges.reserve(mit->size());
    for (size_t i = 0; i < mit->size(); ++i) {
      const json& m = (*mit)[i];
      auto mwhere = [&] { return where + ".merges[" + std::to_string(i) + "]"; };  // built only on failure
      if (m.is_string()) {
        merges.push_back({"", "", m.get<std::string>()});
        if (merges.back().line.empty()) fail(mwhere(), "empty merge");
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        merges.push_back({m[0].get<std::string>(), m[1].get<std::string>(), ""});
      } else {
        fail(mwhere(), "expected \"left right\" or [\"left\", \"right\"]");
      }
    }
  }

  BpeOptions o;
  auto opt_string = [&](const char* key) -> std::optional<std::string> {
    auto it = model.find(key);
    if (it == model.end() || it->is_null()) return std::nullopt;
    if (!it->is_string()) fail(where + "." + key, "expected a string");
    return it->get<std::string>();
  };
  o.unk_token = opt_string("unk_token");
  o.continuing_subword_prefix = opt_string("continuing_subword_prefix").value_or("");
  o.end_of_word_suffix = opt_string("end_of_word_suffix").value_or("");
  o.fuse_unk = get_bool(model, "fuse_unk", false, where);
  o.byte_fallback = get_bool(model, "byte_fallback", false, where);
  o.ignore_merges = get_bool(model, "ignore_merges", false, where);
  auto dropout = model.find("dropout");
  if (dropout != model.end() && !dropout->is_null() && !(dropout->is_number() && dropout->get<double>() == 0.0))
    fail(where + ".dropout", "BPE dropout is not supported (it makes encoding random)");
  return std::make_unique<BpeModel>(std::move(vocab), std::move(merges), std::move(o), byte_level_input, where);
}

std::optional<int32_t> BpeModel::id_of(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

int32_t BpeModel::lookup_unit(std::string_view unit) const {
  const StringMap& map = byte_level_input_ ? raw_vocab_ : vocab_;
  auto it = map.find(unit);
  return it == map.end() ? -1 : it->second;
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    int32_t id = lookup_unit(word);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  if (word.size() <= kCacheMaxWordBytes) {
    merge_cached(word, out);
  } else if (joined_pairs_.empty()) {
    merge_word(word, out);
  } else {
    merge_in_pieces(word, out);
  }
}

void BpeModel::merge_cached(std::string_view word, std::vector<int32_t>& out) const {
  {
    std::shared_lock lock(cache_mutex_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  size_t first = out.size();
  merge_word(word, out);
  std::unique_lock lock(cache_mutex_);
  if (cache_.size() < kCacheCapacity) cache_.emplace(std::string(word), std::vector<int32_t>(out.begin() + first, out.end()));
}

// SentencePiece-style models see the whole text as one word. It is cut between two characters
// that are tokens themselves and that no token contains side by side: no merge can ever join
// the two sides, so the pieces merge (and cache) on their own with the same result.
void BpeModel::merge_in_pieces(std::string_view word, std::vector<int32_t>& out) const {
  auto flush = [&](std::string_view piece) {
    if (piece.size() <= kCacheMaxWordBytes) merge_cached(piece, out);
    else merge_word(piece, out);
  };
  size_t start = 0;
  char32_t prev = 0;
  bool prev_known = false;
  for (size_t i = 0; i < word.size();) {
    size_t begin = i;
    char32_t c = next_char(word, i);
    bool known = lookup_unit(word.substr(begin, i - begin)) >= 0;
    if (begin > start && prev_known && known && !joined_pairs_.contains(pair_key(prev, c))) {
      flush(word.substr(start, begin - start));
      start = begin;
    }
    prev = c;
    prev_known = known;
  }
  flush(word.substr(start));
}

namespace {

// A symbol of the word being merged: a token id in a doubly linked list (HF models/bpe/word.rs).
struct Symbol {
  int32_t id;
  int32_t prev, next;
  bool alive;
};

// A candidate merge of the pair starting at `pos`, ordered by rank, then leftmost position.
struct Candidate {
  int32_t rank, pos, merged;
  bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> queue;  // a min-heap on (rank, pos)
  thread_local std::string unit;
  symbols.clear();
  auto add = [&](int32_t id) {
    int32_t n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, n + 1, true});
  };

  // 1. Initial symbols: one per character (per byte for byte-level input), as HF merge_word.
  bool plain_bytes = byte_level_input_ && unit_prefix_.empty() && unit_suffix_.empty();
  int32_t pending_unk = -1;  // a run of unknown characters waiting to be emitted (fuse_unk)
  for (size_t i = 0; i < word.size();) {
    size_t start = i;
    i += byte_level_input_ ? 1 : char_len(static_cast<unsigned char>(word[i]));
    if (i > word.size()) i = word.size();
    int32_t id;
    std::string_view key;
    if (plain_bytes) {
      id = byte_ids_[static_cast<unsigned char>(word[start])];
      key = word.substr(start, 1);
    } else {
      unit.clear();
      if (start > 0) unit += unit_prefix_;
      unit.append(word, start, i - start);
      if (i == word.size()) unit += unit_suffix_;
      id = lookup_unit(unit);
      key = unit;
    }
    if (id >= 0) {
      if (pending_unk >= 0) {
        add(pending_unk);
        pending_unk = -1;
      }
      add(id);
      continue;
    }
    if (options_.byte_fallback) {
      bool all = true;
      for (char c : key) all &= fallback_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {
        // HF adds the byte tokens without flushing a pending unk first; so do we.
        for (char c : key) add(fallback_ids_[static_cast<unsigned char>(c)]);
        continue;
      }
    }
    if (unk_id_ >= 0) {
      if (pending_unk >= 0 && !options_.fuse_unk) add(pending_unk);
      pending_unk = unk_id_;
    }
    // Without an unk token HF drops the character.
  }
  if (pending_unk >= 0) add(pending_unk);
  if (symbols.empty()) return;
  symbols.back().next = -1;

  // 2. Merge: repeatedly apply the lowest-rank merge, leftmost first.
  queue.clear();
  auto consider = [&](int32_t pos) {
    int32_t next = symbols[pos].next;
    if (next < 0) return;
    if (const MergeTable::Rule* r = merges_.find(symbols[pos].id, symbols[next].id)) {
      queue.push_back({r->rank, pos, r->merged});
      std::push_heap(queue.begin(), queue.end(), std::greater<Candidate>());
    }
  };
  for (int32_t p = 0; p + 1 < static_cast<int32_t>(symbols.size()); ++p) consider(p);
  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end(), std::greater<Candidate>());
    Candidate top = queue.back();
    queue.pop_back();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    const MergeTable::Rule* r = merges_.find(left.id, right.id);
    if (!r || r->merged != top.merged) continue;  // a stale candidate: the pair has changed
    left.id = top.merged;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(top.pos);
  }

  for (const Symbol& s : symbols)
    if (s.alive) out.push_back(s.id);
}

}  // namespace purellm::tok
