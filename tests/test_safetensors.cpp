// safetensors loading: every real file in the test data against an independent header parse,
// malformed files built here from a valid one, and a sharded folder split from a fixture.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tensor/safetensors.hpp"
#include "tests/golden.hpp"
#include "tests/temp_dir.hpp"
#include "tests/testdata.hpp"

using namespace purellm;
using namespace std::string_literals;
using json = nlohmann::json;
using Kind = SafetensorsError::Kind;
namespace fs = std::filesystem;

namespace {

constexpr LoadMode kModes[] = {LoadMode::Copy, LoadMode::Mmap};

const char* mode_name(LoadMode mode) { return mode == LoadMode::Copy ? "Copy" : "Mmap"; }

// ---- files on disk ----------------------------------------------------------------------------

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((v >> (8 * i)) & 0xff);
  return s;
}

// A safetensors file: length, header, data. `length` overrides the header length field.
std::string file_bytes(const std::string& header, const std::string& data,
                       std::optional<uint64_t> length = std::nullopt) {
  return le64(length.value_or(header.size())) + header + data;
}

// A tensor to write: its header fields and its raw bytes.
struct Entry {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// A well-formed file holding `entries` in order, `gap` unused bytes before each tensor, the
// header padded with spaces to a multiple of 8 as safetensors writers do.
std::string build_file(const std::vector<Entry>& entries, size_t gap = 0) {
  json header = {{"__metadata__", {{"format", "pt"}}}};
  std::string data;
  for (const Entry& e : entries) {
    data.append(gap, '\x55');
    header[e.name] = {{"dtype", e.dtype},
                      {"shape", e.shape},
                      {"data_offsets", {data.size(), data.size() + e.bytes.size()}}};
    data += e.bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return file_bytes(text, data);
}

// The entries of a file, read through the loader under test.
std::vector<Entry> entries_of(const SafetensorsFile& file) {
  std::vector<Entry> entries;
  for (const TensorInfo& info : file.tensors()) {
    const Tensor t = file.tensor(info);
    entries.push_back({info.name, std::string(dtype_name(info.dtype)), info.shape,
                       std::string(static_cast<const char*>(t.data), t.nbytes())});
  }
  return entries;
}

// ---- an independent reading of a file: the whole file and its header parsed directly -----------

struct RawFile {
  std::string bytes;
  json header;
  uint64_t data_start = 0;
};

RawFile read_raw(const std::string& path) {
  RawFile raw;
  raw.bytes = read_bytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(raw.bytes.at(size_t(i)));
  raw.header = json::parse(raw.bytes.substr(8, n));
  raw.data_start = 8 + n;
  return raw;
}

// ---- the real files: every fixture and stories260K ----------------------------------------------

// Folders holding model.safetensors + golden.safetensors: the fixtures (listed, not named) and
// stories260K. Empty when the test data is missing.
std::vector<std::string> model_folders(size_t* fixture_count = nullptr) {
  std::vector<std::string> folders;
  const std::string fixtures = purellm::test::testdata_path("fixtures");
  if (!fixtures.empty())
    for (const auto& entry : fs::directory_iterator(fixtures))
      if (entry.is_directory()) folders.push_back(entry.path().string());
  std::sort(folders.begin(), folders.end());
  if (fixture_count) *fixture_count = folders.size();
  const std::string stories = purellm::test::testdata_path("models/stories260K");
  if (!stories.empty()) folders.push_back(stories);
  return folders;
}

std::vector<int64_t> json_shape(const json& shape) { return shape.get<std::vector<int64_t>>(); }

// Loads `path` in `mode` and checks it against the raw file: same tensors, dtypes, shapes and
// offsets as the header says, and the same bytes as the file holds at those offsets.
void check_against_raw(const std::string& path, LoadMode mode, const RawFile& raw) {
  SCOPED_TRACE(path + " (" + mode_name(mode) + ")");
  const auto file = SafetensorsFile::open(path, mode);
  size_t listed = 0;
  for (const auto& [name, entry] : raw.header.items()) {
    if (name == "__metadata__") {
      EXPECT_EQ(file->metadata(), entry);
      continue;
    }
    ++listed;
    const TensorInfo* info = file->find(name);
    ASSERT_NE(info, nullptr) << name;
    EXPECT_EQ(dtype_name(info->dtype), entry["dtype"].get<std::string>()) << name;
    EXPECT_EQ(info->shape, json_shape(entry["shape"])) << name;
    EXPECT_EQ(info->begin, entry["data_offsets"][0].get<uint64_t>()) << name;
    EXPECT_EQ(info->end, entry["data_offsets"][1].get<uint64_t>()) << name;

    const Tensor t = file->tensor(*info);
    EXPECT_EQ(t.dtype, info->dtype);
    ASSERT_EQ(t.ndim, int(info->shape.size()));
    for (int d = 0; d < t.ndim; ++d) EXPECT_EQ(t.shape[size_t(d)], info->shape[size_t(d)]);
    EXPECT_TRUE(t.is_contiguous()) << name;
    ASSERT_EQ(t.nbytes(), info->end - info->begin) << name;
    if (mode == LoadMode::Copy) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % AlignedBuffer::kAlign, 0u) << name;
    }
    EXPECT_EQ(std::memcmp(t.data, raw.bytes.data() + raw.data_start + info->begin, t.nbytes()), 0)
        << name << " bytes differ from the file";
  }
  EXPECT_EQ(file->tensors().size(), listed);
  EXPECT_EQ(file->data_bytes(), raw.bytes.size() - raw.data_start);
}

TEST(SafetensorsFiles, EveryTestDataFileLoadsInBothModes) {
  REQUIRE_TESTDATA(fixtures, "fixtures");
  size_t fixture_count = 0;
  const std::vector<std::string> folders = model_folders(&fixture_count);
  EXPECT_GE(fixture_count, 13u);
  size_t files = 0;
  for (const std::string& folder : folders) {
    for (const char* name : {"model.safetensors", "golden.safetensors"}) {
      const std::string path = (fs::path(folder) / name).string();
      ASSERT_TRUE(fs::exists(path)) << path;
      const RawFile raw = read_raw(path);
      for (LoadMode mode : kModes) check_against_raw(path, mode, raw);
      ++files;
    }
  }
  EXPECT_EQ(files, 2 * folders.size());
}

TEST(SafetensorsFiles, BothModesGiveTheSameBytes) {
  REQUIRE_TESTDATA(fixtures, "fixtures");
  for (const std::string& folder : model_folders()) {
    const WeightFiles copied = WeightFiles::open(folder, LoadMode::Copy);
    const WeightFiles mapped = WeightFiles::open(folder, LoadMode::Mmap);
    ASSERT_EQ(copied.names(), mapped.names()) << folder;
    for (const std::string& name : copied.names()) {
      const Tensor a = copied.get(name), b = mapped.get(name);
      ASSERT_EQ(a.nbytes(), b.nbytes()) << folder << " " << name;
      EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes()), 0) << folder << " " << name;
    }
  }
}

// release() drops a mapped tensor's pages (the loader's --dtype conversion reads each file
// tensor once); touching them again reads the same bytes from the file. In Copy mode it does
// nothing to the copy.
TEST(SafetensorsFiles, ReleasedTensorsReadBackTheSameBytes) {
  REQUIRE_TESTDATA(fixtures, "fixtures");
  for (const std::string& folder : model_folders())
    for (LoadMode mode : {LoadMode::Mmap, LoadMode::Copy}) {
      const WeightFiles files = WeightFiles::open(folder, mode);
      for (const std::string& name : files.names()) {
        const Tensor t = files.get(name);
        const auto* bytes = static_cast<const char*>(t.data);
        const std::vector<char> before(bytes, bytes + t.nbytes());
        files.release(t);
        EXPECT_TRUE(std::equal(before.begin(), before.end(), bytes)) << folder << " " << name;
      }
    }
}

TEST(SafetensorsFiles, GoldenJsonListsTheGoldenTensors) {
  REQUIRE_TESTDATA(fixtures, "fixtures");
  const std::map<std::string, DType> dtypes = {{"float32", DType::F32}, {"int64", DType::I64}};
  for (const std::string& folder : model_folders()) {
    SCOPED_TRACE(folder);
    std::ifstream in(fs::path(folder) / "golden.json");
    const json listed = json::parse(in)["golden_tensors"];
    const WeightFiles goldens = purellm::test::open_goldens(folder);
    EXPECT_EQ(goldens.names().size(), listed.size());
    for (const auto& [name, entry] : listed.items()) {
      ASSERT_TRUE(goldens.has(name)) << name;
      EXPECT_EQ(goldens.info(name).dtype, dtypes.at(entry["dtype"].get<std::string>())) << name;
      EXPECT_EQ(goldens.info(name).shape, json_shape(entry["shape"])) << name;
    }
  }
}

TEST(SafetensorsFiles, WeightFilesOfAFolder) {
  REQUIRE_TESTDATA(dir, "fixtures/llama-tiny");
  const WeightFiles w = WeightFiles::open(dir);
  const RawFile raw = read_raw(dir + "/model.safetensors");
  const std::vector<std::string> names = w.names();
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  EXPECT_EQ(names.size(), raw.header.size() - 1);  // all but __metadata__
  EXPECT_EQ(w.total_bytes(), raw.bytes.size() - raw.data_start);  // HF files have no gaps
  EXPECT_EQ(w.source(), dir);
  EXPECT_EQ(w.mode(), LoadMode::Copy);
  EXPECT_TRUE(w.has(names.front()));
  EXPECT_FALSE(w.has("lm_head.weight.nope"));
  try {
    w.get("lm_head.weight.nope");
    ADD_FAILURE() << "a missing tensor loaded";
  } catch (const SafetensorsError& e) {
    EXPECT_EQ(e.kind(), Kind::MissingTensor);
    EXPECT_EQ(e.tensor(), "lm_head.weight.nope");
    EXPECT_NE(std::string(e.what()).find(dir), std::string::npos) << e.what();
  }
  EXPECT_THROW(w.info("nope"), SafetensorsError);
  // A single file path gives the same tensors as its folder.
  EXPECT_EQ(WeightFiles::open(dir + "/model.safetensors", LoadMode::Mmap).names(), names);
}

// ---- errors ---------------------------------------------------------------------------------------

// Runs `load`, which must throw a SafetensorsError of `kind` about `file` (and `tensor`, when
// not empty) whose message contains `detail`.
void expect_error(const std::function<void()>& load, Kind kind, const std::string& file,
                  const std::string& tensor, const std::string& detail) {
  try {
    load();
    ADD_FAILURE() << "loaded without error; expected " << kind_name(kind);
  } catch (const SafetensorsError& e) {
    const std::string message = e.what();
    EXPECT_EQ(kind_name(e.kind()), kind_name(kind)) << message;
    EXPECT_NE(message.find(fs::path(file).filename().string()), std::string::npos) << message;
    EXPECT_EQ(e.file(), file) << message;
    if (!tensor.empty()) {
      EXPECT_EQ(e.tensor(), tensor) << message;
      EXPECT_NE(message.find("\"" + tensor + "\""), std::string::npos) << message;
    }
    EXPECT_NE(message.find(detail), std::string::npos) << "no \"" << detail << "\" in: " << message;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a SafetensorsError: " << e.what();
  }
}

// Two tensors, "a" F32[2, 3] at [0, 24) and "b" BF16[4] at [24, 32), plus __metadata__.
json valid_header() {
  return {{"__metadata__", {{"format", "pt"}}},
          {"a", {{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {0, 24}}}},
          {"b", {{"dtype", "BF16"}, {"shape", {4}}, {"data_offsets", {24, 32}}}}};
}

const std::string kData(32, '\x11');

std::string edited(const std::function<void(json&)>& edit, const std::string& data = kData) {
  json header = valid_header();
  edit(header);
  return file_bytes(header.dump(), data);
}

struct BadFile {
  std::string name;  // the test name and the file name (<name>.safetensors)
  std::string bytes;
  Kind kind;
  std::string tensor;  // the tensor the error must name, "" when none
  std::string detail;  // a piece the message must contain
};

void PrintTo(const BadFile& bad, std::ostream* out) { *out << bad.name; }

std::vector<BadFile> bad_files() {
  const std::string header = valid_header().dump();
  const uint64_t two63 = uint64_t{1} << 63;
  return {
      {"EmptyFile", "", Kind::Truncated, "", "0 bytes"},
      {"SevenBytes", "\x08\0\0\0\0\0\0"s, Kind::Truncated, "", "7 bytes"},
      {"HeaderLengthPastEof", file_bytes(header, kData, header.size() + 33), Kind::Truncated, "",
       "past the end"},
      {"HeaderLengthOver100MB", file_bytes(header, kData, kMaxHeaderBytes + 1),
       Kind::HeaderTooLarge, "", "100000001"},
      {"HeaderLengthMaxU64", file_bytes(header, kData, ~uint64_t{0}), Kind::HeaderTooLarge, "",
       "limit"},
      {"ZeroLengthHeader", file_bytes("", kData), Kind::BadJson, "", "not valid JSON"},
      {"BadJson", file_bytes(R"({"a": {"dtype": "F32",)", kData), Kind::BadJson, "",
       "not valid JSON"},
      {"InvalidUtf8", file_bytes("{\"a\xff\": {}}", kData), Kind::BadJson, "", "not valid JSON"},
      {"JsonArray", file_bytes("[1, 2]", kData), Kind::BadJson, "", "not an object"},
      {"JsonString", file_bytes("\"weights\"", kData), Kind::BadJson, "", "not an object"},
      {"DuplicateName",
       file_bytes(R"({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},)"
                  R"( "a": {"dtype": "BF16", "shape": [4], "data_offsets": [24, 32]}})",
                  kData),
       Kind::BadJson, "a", "named twice"},
      {"EntryNotObject", edited([](json& h) { h["a"] = 5; }), Kind::BadJson, "a", "not an object"},
      {"MissingDtype", edited([](json& h) { h["a"].erase("dtype"); }), Kind::BadJson, "a",
       "no \"dtype\""},
      {"DtypeNotString", edited([](json& h) { h["a"]["dtype"] = 4; }), Kind::BadJson, "a",
       "not a string"},
      {"UnknownDtype", edited([](json& h) { h["a"]["dtype"] = "F64"; }), Kind::UnknownDtype, "a",
       "\"F64\""},
      {"ShapeNotArray", edited([](json& h) { h["a"]["shape"] = "2x3"; }), Kind::BadShape, "a",
       "not an array"},
      {"NegativeDim", edited([](json& h) { h["a"]["shape"] = {-2, -3}; }), Kind::BadShape, "a",
       "-2"},
      {"FloatDim", edited([](json& h) { h["a"]["shape"] = {2.5, 3}; }), Kind::BadShape, "a",
       "2.5"},
      {"Dim2Pow63", edited([&](json& h) { h["a"]["shape"] = {two63}; }), Kind::BadShape, "a",
       "9223372036854775808"},
      {"Dim2Pow64", file_bytes(R"({"a": {"dtype": "F32", "shape": [18446744073709551616],)"
                               R"( "data_offsets": [0, 24]}})",
                               kData),
       Kind::BadShape, "a", "not an integer"},
      {"ElementCountOverflow", edited([](json& h) { h["a"]["shape"] = {1LL << 32, 1LL << 32}; }),
       Kind::BadShape, "a", "multiply past 2^63"},
      {"ZeroDimButOverflowingStrides",
       edited([](json& h) { h["a"]["shape"] = {0, 1LL << 62, 1LL << 62}; }), Kind::BadShape, "a",
       "multiply past 2^63"},
      {"ByteSizeOverflow", edited([](json& h) { h["a"]["shape"] = {1LL << 62}; }),
       Kind::BadShape, "a", "2^64 bytes"},
      {"FiveDims", edited([](json& h) { h["a"]["shape"] = {1, 1, 2, 1, 3}; }), Kind::BadShape,
       "a", "5 dims"},
      {"PartialQuantBlock",
       edited([](json& h) { h["a"] = {{"dtype", "Q8_0"}, {"shape", {33}}, {"data_offsets", {0, 24}}}; }),
       Kind::BadShape, "a", "multiple of the 32-element block"},
      {"OffsetsNotPair", edited([](json& h) { h["a"]["data_offsets"] = {0}; }), Kind::BadJson,
       "a", "not [begin, end]"},
      {"OffsetsStrings", edited([](json& h) { h["a"]["data_offsets"] = {"0", "24"}; }),
       Kind::BadJson, "a", "not [begin, end]"},
      {"MissingOffsets", edited([](json& h) { h["b"].erase("data_offsets"); }), Kind::BadJson,
       "b", "no \"data_offsets\""},
      {"OffsetsOutOfRange", edited([](json& h) { h["b"]["data_offsets"] = {32, 40}; }),
       Kind::OutOfRange, "b", "[32, 40) ends past the 32-byte data section"},
      {"TruncatedData", edited([](json&) {}, kData.substr(0, 31)), Kind::OutOfRange, "b",
       "31-byte data section"},
      {"BeginAfterEnd", edited([](json& h) { h["b"]["data_offsets"] = {32, 24}; }),
       Kind::OutOfRange, "b", "ends before it begins"},
      {"OffsetIntoHeader", edited([](json& h) { h["a"]["data_offsets"] = {-8, 16}; }),
       Kind::OutOfRange, "a", "negative"},
      {"Overlap", edited([](json& h) { h["b"]["data_offsets"] = {20, 28}; }), Kind::Overlap, "b",
       "overlap tensor \"a\""},
      {"SameRangeTwice",
       edited([](json& h) { h["c"] = {{"dtype", "I32"}, {"shape", {6}}, {"data_offsets", {0, 24}}}; }),
       Kind::Overlap, "c", "[0, 24)"},
      {"SizeMismatch", edited([](json& h) { h["a"]["shape"] = {2, 4}; }), Kind::SizeMismatch, "a",
       "[0, 24) hold 24 bytes but F32[2, 4] needs 32"},
      {"MetadataNotStrings", edited([](json& h) { h["__metadata__"]["format"] = 1; }),
       Kind::BadJson, "", "__metadata__"},
      {"MetadataNotObject", edited([](json& h) { h["__metadata__"] = "pt"; }), Kind::BadJson, "",
       "__metadata__"},
  };
}

class MalformedFile : public testing::TestWithParam<BadFile> {};

TEST_P(MalformedFile, FailsNamingFileAndTensor) {
  const BadFile& bad = GetParam();
  const TempDir dir;
  const std::string path = dir.write(bad.name + ".safetensors", bad.bytes);
  for (LoadMode mode : kModes) {
    SCOPED_TRACE(mode_name(mode));
    expect_error([&] { SafetensorsFile::open(path, mode); }, bad.kind, path, bad.tensor, bad.detail);
    expect_error([&] { WeightFiles::open(path, mode); }, bad.kind, path, bad.tensor, bad.detail);
  }
}

INSTANTIATE_TEST_SUITE_P(Safetensors, MalformedFile, testing::ValuesIn(bad_files()),
                         [](const testing::TestParamInfo<BadFile>& info) { return info.param.name; });

TEST(SafetensorsErrors, MissingPathAndFolders) {
  const TempDir dir;
  const std::string missing = (dir.path() / "none.safetensors").string();
  expect_error([&] { SafetensorsFile::open(missing, LoadMode::Copy); }, Kind::Io, missing, "",
               "No such file");
  const std::string folder = dir.path().string();
  expect_error([&] { SafetensorsFile::open(folder, LoadMode::Mmap); }, Kind::Io, folder, "",
               "not a regular file");
  expect_error([&] { WeightFiles::open(folder); }, Kind::Io, folder, "", "neither");
  const std::string index = (dir.path() / "absent.index.json").string();
  expect_error([&] { WeightFiles::open(index); }, Kind::Io, index, "", "missing");
}

// The cap on the number of tensors, checked while parsing (kMaxTensors by default; a small
// cap here keeps the test fast). __metadata__ is not a tensor.
TEST(SafetensorsErrors, TooManyTensors) {
  const std::string header = valid_header().dump();
  EXPECT_EQ(parse_safetensors_header(header, 32, "two.safetensors", nullptr, 2).size(), 2u);
  expect_error([&] { parse_safetensors_header(header, 32, "two.safetensors", nullptr, 1); },
               Kind::HeaderTooLarge, "two.safetensors", "", "more than 1 tensors");
}

// ---- unusual files that are valid ------------------------------------------------------------------

TEST(SafetensorsEdgeCases, MetadataIsOptionalAndKept) {
  const TempDir dir;
  const std::string with = dir.write("with.safetensors", file_bytes(valid_header().dump(), kData));
  json header = valid_header();
  header.erase("__metadata__");
  const std::string without = dir.write("without.safetensors", file_bytes(header.dump(), kData));
  for (LoadMode mode : kModes) {
    const auto a = SafetensorsFile::open(with, mode);
    EXPECT_EQ(a->metadata(), json({{"format", "pt"}}));
    EXPECT_EQ(a->tensors().size(), 2u);
    const auto b = SafetensorsFile::open(without, mode);
    EXPECT_TRUE(b->metadata().is_null());
    EXPECT_EQ(b->tensors().size(), 2u);
  }
}

// Empty tensors, a scalar, a quantized block row, and tensors at odd offsets with gaps between
// them: Copy mode still aligns each one, and both modes return the file's bytes.
TEST(SafetensorsEdgeCases, OddButValidTensors) {
  std::string q8(34, '\0');
  for (size_t i = 0; i < q8.size(); ++i) q8[i] = char(i * 7 + 1);
  const std::vector<Entry> entries = {
      {"empty", "F32", {0, 5}, ""},
      {"scalar", "I64", {}, std::string("\x2a\0\0\0\0\0\0\0", 8)},
      {"row", "BF16", {3}, "\x01\x02\x03\x04\x05\x06"},
      {"also_empty", "F16", {4, 0}, ""},
      {"q8", "Q8_0", {1, 32}, q8},
  };
  const TempDir dir;
  const std::string path = dir.write("odd.safetensors", build_file(entries, /*gap=*/3));
  const RawFile raw = read_raw(path);
  for (LoadMode mode : kModes) {
    check_against_raw(path, mode, raw);
    const auto file = SafetensorsFile::open(path, mode);
    EXPECT_EQ(file->tensor(*file->find("scalar")).numel(), 1);
    int64_t scalar = 0;  // Mmap mode keeps the file's odd offset: no direct int64 load
    std::memcpy(&scalar, file->tensor(*file->find("scalar")).data, 8);
    EXPECT_EQ(scalar, 42);
    EXPECT_EQ(file->tensor(*file->find("empty")).numel(), 0);
    EXPECT_EQ(file->tensor(*file->find("q8")).nbytes(), 34u);
  }
}

TEST(SafetensorsEdgeCases, TensorFromAnotherFileIsRejected) {
  const TempDir dir;
  const std::string path = dir.write("a.safetensors", file_bytes(valid_header().dump(), kData));
  const auto one = SafetensorsFile::open(path, LoadMode::Copy);
  const auto two = SafetensorsFile::open(path, LoadMode::Copy);
  EXPECT_THROW(one->tensor(two->tensors()[0]), std::invalid_argument);
  EXPECT_EQ(one->find("zzz"), nullptr);
}

// ---- sharded folders ---------------------------------------------------------------------------------

const std::string kShard1 = "model-00001-of-00002.safetensors";
const std::string kShard2 = "model-00002-of-00002.safetensors";

// Splits `entries` into two shards + model.safetensors.index.json in `dir`; returns the index.
json write_sharded(const TempDir& dir, const std::string& sub, const std::vector<Entry>& entries) {
  const size_t half = entries.size() / 2;
  const std::vector<Entry> first(entries.begin(), entries.begin() + long(half));
  const std::vector<Entry> second(entries.begin() + long(half), entries.end());
  json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  for (const Entry& e : first) index["weight_map"][e.name] = kShard1;
  for (const Entry& e : second) index["weight_map"][e.name] = kShard2;
  dir.write(sub + "/" + kShard1, build_file(first));
  dir.write(sub + "/" + kShard2, build_file(second));
  dir.write(sub + "/model.safetensors.index.json", index.dump(2));
  return index;
}

std::vector<Entry> fixture_entries(const std::string& fixture_dir) {
  return entries_of(*SafetensorsFile::open(fixture_dir + "/model.safetensors", LoadMode::Copy));
}

TEST(SafetensorsSharded, LoadsLikeTheSingleFile) {
  REQUIRE_TESTDATA(fixture, "fixtures/llama-tiny");
  const WeightFiles original = WeightFiles::open(fixture);
  const TempDir dir;
  write_sharded(dir, "sharded", fixture_entries(fixture));
  const std::string folder = (dir.path() / "sharded").string();
  for (const std::string& path : {folder, folder + "/model.safetensors.index.json"}) {
    for (LoadMode mode : kModes) {
      SCOPED_TRACE(path + " " + mode_name(mode));
      const WeightFiles sharded = WeightFiles::open(path, mode);
      ASSERT_EQ(sharded.names(), original.names());
      EXPECT_EQ(sharded.total_bytes(), original.total_bytes());
      for (const std::string& name : original.names()) {
        const Tensor a = original.get(name), b = sharded.get(name);
        EXPECT_EQ(a.describe(), b.describe()) << name;
        ASSERT_EQ(a.nbytes(), b.nbytes()) << name;
        EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes()), 0) << name;
      }
      expect_error([&] { sharded.get("missing.weight"); }, Kind::MissingTensor, path,
                   "missing.weight", "not found");
    }
  }
}

struct BadShards {
  std::string name;
  std::function<void(json& index)> edit;
  Kind kind;
  std::string file;    // the file the error is about, relative to the folder
  std::string tensor;  // "" when none
  std::string detail;
};

TEST(SafetensorsSharded, BrokenFoldersFailClearly) {
  REQUIRE_TESTDATA(fixture, "fixtures/llama-tiny");
  const std::vector<Entry> entries = fixture_entries(fixture);
  const std::string first = entries.front().name, last = entries.back().name;
  const std::string index_file = "model.safetensors.index.json";
  const std::vector<BadShards> cases = {
      {"missing_shard",
       [](json& index) { index["weight_map"]["extra"] = "model-00003-of-00003.safetensors"; },
       Kind::Io, index_file, "extra", "model-00003-of-00003.safetensors"},
      {"tensor_absent_from_shard",
       [](json& index) { index["weight_map"]["ghost.weight"] = kShard1; },
       Kind::BadIndex, index_file, "ghost.weight", kShard1},
      {"tensor_in_the_other_shard",
       [&](json& index) { index["weight_map"][first] = kShard2; },
       Kind::BadIndex, index_file, first, kShard2},
      {"no_weight_map", [](json& index) { index.erase("weight_map"); },
       Kind::BadIndex, index_file, "", "weight_map"},
      {"shard_not_a_string", [&](json& index) { index["weight_map"][first] = 1; },
       Kind::BadIndex, index_file, first, "not a file name"},
      {"shard_outside_folder",
       [&](json& index) { index["weight_map"][first] = "../" + kShard1; },
       Kind::BadIndex, index_file, first, "not a file name"},
      {"empty_weight_map", [](json& index) { index["weight_map"] = json::object(); },
       Kind::BadIndex, index_file, "", "empty"},
  };
  for (const BadShards& c : cases) {
    SCOPED_TRACE(c.name);
    const TempDir dir;
    json index = write_sharded(dir, "m", entries);
    c.edit(index);
    dir.write("m/" + index_file, index.dump());
    const std::string folder = (dir.path() / "m").string();
    expect_error([&] { WeightFiles::open(folder, LoadMode::Mmap); }, c.kind, folder + "/" + c.file,
                 c.tensor, c.detail);
  }

  const TempDir dir;
  const std::string folder = (dir.path() / "m").string();
  // Malformed index JSON.
  write_sharded(dir, "m", entries);
  dir.write("m/" + index_file, "{\"weight_map\": {");
  expect_error([&] { WeightFiles::open(folder); }, Kind::BadIndex, folder + "/" + index_file, "",
               "not valid JSON");
  // A truncated shard: its last tensor runs past the end of the data.
  write_sharded(dir, "m", entries);
  const std::string shard2 = folder + "/" + kShard2;
  const std::string bytes = read_bytes(shard2);
  dir.write("m/" + kShard2, bytes.substr(0, bytes.size() - 10));
  expect_error([&] { WeightFiles::open(folder); }, Kind::OutOfRange, shard2, last, "truncated");
  // A shard cut inside its header.
  dir.write("m/" + kShard2, bytes.substr(0, 20));
  expect_error([&] { WeightFiles::open(folder); }, Kind::Truncated, shard2, "", "past the end");
  // The same tensor in both shards.
  write_sharded(dir, "m", entries);
  std::vector<Entry> second(entries.begin() + long(entries.size() / 2), entries.end());
  second.push_back(entries.front());
  dir.write("m/" + kShard2, build_file(second));
  expect_error([&] { WeightFiles::open(folder); }, Kind::BadIndex, shard2, first, kShard1);
}

// ---- tests/golden.hpp ----------------------------------------------------------------------------------

TEST(Goldens, ReadAsVectorsWithShapes) {
  REQUIRE_TESTDATA(dir, "fixtures/llama-tiny");
  std::ifstream in(dir + "/golden.json");
  const json listed = json::parse(in)["golden_tensors"];
  const WeightFiles goldens = purellm::test::open_goldens(dir);
  const auto ids = purellm::test::golden_i64(goldens, "input_ids");
  EXPECT_EQ(ids.shape, json_shape(listed["input_ids"]["shape"]));
  ASSERT_EQ(ids.values.size(), size_t(ids.shape[0] * ids.shape[1]));
  const Tensor raw_ids = goldens.get("input_ids");
  EXPECT_EQ(ids.values.back(), raw_ids.ptr<int64_t>()[raw_ids.numel() - 1]);
  const auto logits = purellm::test::golden_f32(goldens, "logits");
  EXPECT_EQ(logits.shape, json_shape(listed["logits"]["shape"]));
  EXPECT_EQ(logits.values.size(), size_t(goldens.get("logits").numel()));
  EXPECT_THROW(purellm::test::golden_f32(goldens, "input_ids"), std::runtime_error);
  EXPECT_THROW(purellm::test::golden_i64(goldens, "nope"), SafetensorsError);
}

TEST(Goldens, ExpectCloseReportsWhereAndHowFar) {
  const std::vector<float> expected = {1.0f, 2.0f, 3.0f, 4.0f};
  std::vector<float> actual = expected;
  actual[2] += 0.5f;
  actual[3] += 0.25f;
  EXPECT_TRUE(purellm::test::expect_close(expected, expected, 0.0f, "same"));
  EXPECT_NONFATAL_FAILURE(purellm::test::expect_close(actual, expected, 1e-3f, "x"),
                          "max abs diff 0.5 > atol");
  EXPECT_NONFATAL_FAILURE(purellm::test::expect_close(actual, expected, 1e-3f, "x"),
                          "2 of 4 values over, first at [2]");
  actual[2] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NONFATAL_FAILURE(purellm::test::expect_close(actual, expected, 1.0f, "x"), "first at [2]");
  EXPECT_NONFATAL_FAILURE(purellm::test::expect_close(std::vector<float>(3), expected, 1.0f, "x"),
                          "3 values, expected 4");
}

}  // namespace
