#include "tokenizer/tokenizer.hpp"

#include <filesystem>

#include "tokenizer/tokenizer_impl.hpp"
#include "tokenizer/utf8.hpp"

namespace purellm {

namespace fs = std::filesystem;
using tok::fail;

namespace tok {

void TokenizerImpl::encode(std::string_view text, std::vector<int32_t>& out) const {
  std::vector<Segment> raw_segments, norm_segments;
  Words words;
  // 1. Added tokens matched against the raw text.
  added.split(text, false, raw_segments);
  for (const Segment& seg : raw_segments) {
    if (seg.id >= 0) {
      out.push_back(seg.id);
      continue;
    }
    // 2. Normalize the text between them, then cut out the "normalized" added tokens.
    std::string normalized(text.substr(seg.begin, seg.end - seg.begin));
    if (normalizer) normalizer->apply(normalized);
    added.split(normalized, true, norm_segments);
    for (const Segment& sub : norm_segments) {
      if (sub.id >= 0) {
        out.push_back(sub.id);
        continue;
      }
      // 3. Pre-tokenize into words; 4. BPE each word.
      pre_tokenizer.run(normalized.substr(sub.begin, sub.end - sub.begin), seg.begin == 0 && sub.begin == 0, words);
      for (const Span& w : words.spans)
        model->tokenize(std::string_view(words.text).substr(w.begin, w.end - w.begin), out);
    }
  }
}

std::optional<int32_t> TokenizerImpl::token_id(std::string_view token) const {
  auto it = added_ids.find(token);
  if (it != added_ids.end()) return it->second;
  return model->id_of(token);
}

}  // namespace tok

namespace {

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

std::string out_of_range(int32_t id, int32_t vocab_size) {
  return "token id " + std::to_string(id) + " is out of range: the vocabulary has " + std::to_string(vocab_size) +
         " ids (0.." + std::to_string(vocab_size - 1) + ")";
}

}  // namespace

Tokenizer::Tokenizer(std::shared_ptr<const tok::TokenizerImpl> impl) : impl_(std::move(impl)) {}

Tokenizer Tokenizer::load(const std::string& path) {
  fs::path p(path);
  std::error_code ec;
  if (fs::is_directory(p, ec)) {
    if (is_file(p / "tokenizer.json")) return Tokenizer(tok::load_tokenizer_json((p / "tokenizer.json").string()));
    if (is_file(p / "vocab.json") && is_file(p / "merges.txt"))
      return Tokenizer(tok::load_vocab_files((p / "vocab.json").string(), (p / "merges.txt").string()));
    if (is_file(p / "encoder.json") && is_file(p / "vocab.bpe"))
      return Tokenizer(tok::load_vocab_files((p / "encoder.json").string(), (p / "vocab.bpe").string()));
    fail(path, "no tokenizer.json, vocab.json + merges.txt or encoder.json + vocab.bpe in this folder");
  }
  if (!is_file(p)) fail(path, "file not found");
  auto beside = [&](const char* name) {
    fs::path m = p.parent_path() / name;
    if (!is_file(m)) fail(path, std::string("needs ") + name + " in the same folder (not found: " + m.string() + ")");
    return m.string();
  };
  if (p.filename() == "vocab.json") return Tokenizer(tok::load_vocab_files(path, beside("merges.txt")));
  if (p.filename() == "encoder.json") return Tokenizer(tok::load_vocab_files(path, beside("vocab.bpe")));
  return Tokenizer(tok::load_tokenizer_json(path));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (tok::is_valid_utf8(text)) {
    impl_->encode(text, ids);
  } else {
    impl_->encode(tok::repair_utf8(text), ids);
  }
  if (add_special) impl_->post.apply(ids);
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  tok::DecodePipeline pipeline(impl_->decoder, impl_->no_decoder);
  for (int32_t id : ids) {
    if (id < 0 || id >= impl_->vocab_size) throw TokenizerError("decode: " + out_of_range(id, impl_->vocab_size));
    if (impl_->has_token[id]) pipeline.put(impl_->id_to_token[id]);
  }
  pipeline.finish();
  return pipeline.take();
}

int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

std::optional<int32_t> Tokenizer::token_id(std::string_view token) const { return impl_->token_id(token); }

std::string Tokenizer::token_text(int32_t id) const {
  if (id < 0 || id >= impl_->vocab_size) throw TokenizerError("token_text: " + out_of_range(id, impl_->vocab_size));
  return impl_->id_to_token[id];
}

std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }

bool Tokenizer::is_special(int32_t id) const { return id >= 0 && id < impl_->vocab_size && impl_->special[id]; }

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer)
    : impl_(tokenizer.impl_), pipeline_(std::make_unique<tok::DecodePipeline>(impl_->decoder, impl_->no_decoder)) {}

StreamDecoder::~StreamDecoder() = default;
StreamDecoder::StreamDecoder(StreamDecoder&&) noexcept = default;
StreamDecoder& StreamDecoder::operator=(StreamDecoder&&) noexcept = default;

std::string StreamDecoder::push(int32_t id) {
  if (id < 0 || id >= impl_->vocab_size) throw TokenizerError("StreamDecoder: " + out_of_range(id, impl_->vocab_size));
  if (impl_->has_token[id]) pipeline_->put(impl_->id_to_token[id]);
  return pipeline_->take();
}

std::string StreamDecoder::finish() {
  pipeline_->finish();
  return pipeline_->take();
}

}  // namespace purellm
