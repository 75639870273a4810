// Element types and their traits.
//
// Every dtype is described by one row of a traits table: its safetensors name, how many
// elements form one block, and how many bytes a block takes. Plain types have blocks of one
// element; quantized types (Q8_0, Q4_0: 32 elements + one F16 scale) are added as new rows,
// so a model file never needs to know which dtype its weights are in.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace purellm {

// Q8_0_R16 / Q4_0_R16 are Q8_0 / Q4_0 with the rows of a matrix interleaved in groups of 16
// (quant.hpp): the CPU backend's own layouts for its AVX-512 VNNI kernels, made at load, never
// read from or written to a file.
enum class DType : uint8_t { F32, F16, BF16, I32, I64, Q8_0, Q4_0, Q8_0_R16, Q4_0_R16 };

struct DTypeTraits {
  DType dtype;
  std::string_view name;  // safetensors / user-facing name ("F32", "BF16", "Q8_0", ...)
  int block_elems;        // elements per block (1 for plain types)
  int block_bytes;        // bytes per block
  bool is_float;          // can be a weight or activation converted to f32 row by row
};

// One row per dtype, in enum order.
inline constexpr std::array<DTypeTraits, 9> kDTypeTraits = {{
    {DType::F32, "F32", 1, 4, true},
    {DType::F16, "F16", 1, 2, true},
    {DType::BF16, "BF16", 1, 2, true},
    {DType::I32, "I32", 1, 4, false},
    {DType::I64, "I64", 1, 8, false},
    {DType::Q8_0, "Q8_0", 32, 34, true},          // f16 scale + 32 x int8
    {DType::Q4_0, "Q4_0", 32, 18, true},          // f16 scale + 16 bytes of 4-bit pairs
    {DType::Q8_0_R16, "Q8_0_R16", 32, 34, true},  // the same blocks, 16 rows interleaved
    {DType::Q4_0_R16, "Q4_0_R16", 32, 18, true},
}};

[[noreturn]] void throw_unknown_dtype(DType t);

// Inline: Tensor::row and dtype_bytes look a dtype up for every call, in per-element loops too.
inline const DTypeTraits& traits(DType t) {
  const auto i = static_cast<size_t>(t);
  if (i >= kDTypeTraits.size()) [[unlikely]]
    throw_unknown_dtype(t);
  return kDTypeTraits[i];
}

std::string_view dtype_name(DType t);
// Parses a safetensors dtype name ("F32", "F16", "BF16", "I64", ...); nullopt if unknown.
std::optional<DType> dtype_from_name(std::string_view name);
// Parses a user-facing dtype flag ("f32", "bf16", "q8_0", ...), case-insensitive.
std::optional<DType> dtype_from_flag(std::string_view name);

// Q8_0 / Q4_0 (and their _R16 layouts): blocks of 32 values with one scale (quant.hpp).
inline bool is_interleaved(DType t) { return t == DType::Q8_0_R16 || t == DType::Q4_0_R16; }
inline bool is_quantized(DType t) { return t == DType::Q8_0 || t == DType::Q4_0 || is_interleaved(t); }

// Bytes taken by n elements of type t; n must be a multiple of the block size.
inline size_t dtype_bytes(DType t, int64_t n) {
  const DTypeTraits& tr = traits(t);
  return static_cast<size_t>(n / tr.block_elems) * static_cast<size_t>(tr.block_bytes);
}

// ---- scalar conversions (the reference; SIMD row conversions live in cpu/) ----------------

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even, NaN stays NaN (quiet), as PyTorch does.
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

}  // namespace purellm
