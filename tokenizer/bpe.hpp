// The BPE model: words -> ids by merging adjacent symbols, lowest merge rank first
// (HF tokenizers models/bpe: byte fallback, unk with fuse_unk, ignore_merges,
// continuing_subword_prefix / end_of_word_suffix).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "tokenizer/json_util.hpp"

namespace purellm::tok {

// Sanity limits on what a tokenizer file may declare (real ones: <= 262k tokens, <= 600k merges).
inline constexpr size_t kMaxVocab = size_t{1} << 22;
inline constexpr size_t kMaxMerges = size_t{1} << 22;

struct BpeOptions {
  std::optional<std::string> unk_token;
  std::string continuing_subword_prefix;
  std::string end_of_word_suffix;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
};

// Heterogeneous lookup: find a std::string key with a std::string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// (left id, right id) -> (rank, merged id), open addressing: one probe per lookup in the hot loop.
class MergeTable {
 public:
  struct Rule {
    int32_t rank, merged;
  };
  void reserve(size_t n);
  void insert(int32_t left, int32_t right, Rule rule);  // a repeated pair keeps the later rule (as HF)
  const Rule* find(int32_t left, int32_t right) const {
    uint64_t key = pack(left, right);
    for (size_t i = slot(key);; i = (i + 1) & mask_) {
      if (keys_[i] == key) return &rules_[i];
      if (keys_[i] == 0) return nullptr;
    }
  }
  size_t size() const { return size_; }

 private:
  static uint64_t pack(int32_t l, int32_t r) { return ((uint64_t(uint32_t(l)) << 32) | uint32_t(r)) + 1; }
  size_t slot(uint64_t key) const { return (key * 0x9E3779B97F4A7C15ull) >> shift_; }
  std::vector<uint64_t> keys_;  // 0 = empty
  std::vector<Rule> rules_;
  size_t mask_ = 0, size_ = 0;
  int shift_ = 64;
};

// A merge rule as read: the two tokens, or for the "left right" string format the whole line
// (split in the constructor, which can see the vocabulary).
struct MergeSpec {
  std::string left, right;
  std::string line;  // non-empty: the "left right" text, not yet split
};

class BpeModel {
 public:
  // vocab: (token, id) in file order; merges in rank order. byte_level_input: words arrive as
  // raw bytes and each byte stands for its byte-level character (byte_level.hpp).
  BpeModel(std::vector<std::pair<std::string, int32_t>> vocab, std::vector<MergeSpec> merges,
           BpeOptions options, bool byte_level_input, const std::string& where);
  // From a tokenizer.json "model" object (type BPE).
  static std::unique_ptr<BpeModel> from_json(const json& model, bool byte_level_input, const std::string& where);

  // Appends the ids of one word.
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;
  // The same, the plain way: the whole word merged at once, no cache, no cutting (the
  // reference tests compare tokenize() with).
  void tokenize_reference(std::string_view word, std::vector<int32_t>& out) const { merge_word(word, out); }

  // Id of a vocab string as spelled in the file.
  std::optional<int32_t> id_of(std::string_view token) const;
  // One past the largest id.
  int32_t size() const { return static_cast<int32_t>(tokens_.size()); }
  // Vocab string of each id ("" where no token has that id).
  const std::vector<std::string>& tokens() const { return tokens_; }

  BpeModel(const BpeModel&) = delete;
  BpeModel& operator=(const BpeModel&) = delete;

 private:
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;
  void merge_cached(std::string_view word, std::vector<int32_t>& out) const;
  void merge_in_pieces(std::string_view word, std::vector<int32_t>& out) const;
  static uint64_t pair_key(char32_t a, char32_t b) { return (uint64_t{a} << 21) | b; }
  struct MergeIds {
    int32_t left, right, merged;
  };
  std::optional<MergeIds> merge_ids(std::string_view left, std::string_view right, std::string* missing) const;
  void add_merge(const MergeSpec& m, size_t rank, const std::string& where);
  int32_t lookup_unit(std::string_view unit) const;  // model-space vocab lookup, -1 if absent

  std::vector<std::string> tokens_;
  StringMap vocab_;      // file spelling -> id
  StringMap raw_vocab_;  // byte_level_input only: raw bytes -> id
  MergeTable merges_;
  BpeOptions options_;
  std::string unit_prefix_, unit_suffix_;  // the prefix / suffix in model space (raw bytes if byte-level)
  bool byte_level_input_;
  int32_t unk_id_ = -1;
  int32_t byte_ids_[256];      // byte_level_input: id of the one-byte token of each byte (-1 if none)
  int32_t fallback_ids_[256];  // byte_fallback: id of "<0xNN>" (-1 if none)
  std::unordered_set<uint64_t> joined_pairs_;  // pair_key of characters adjacent inside a token

  // Word -> ids cache for short words (HF caches the same way), shared by all threads.
  static constexpr size_t kCacheMaxWordBytes = 256;
  static constexpr size_t kCacheCapacity = 1 << 16;
  mutable std::shared_mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

}  // namespace purellm::tok
