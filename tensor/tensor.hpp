// Tensor views and the buffers that own their memory.
//
// A Tensor never owns anything: it is dtype + shape + strides + a data pointer + the device
// that pointer belongs to. Memory is owned by a Buffer (aligned host memory, huge-page
// anonymous memory, device memory from a Backend) or by a mapped file.
//
// Conventions used by every Backend op:
//   - shapes are outermost first, strides are in elements (for block-quantized dtypes the
//     innermost dimension must be contiguous and whole rows are addressed);
//   - activations are F32 2-D tensors [rows, cols] whose rows are contiguous (stride[1] == 1)
//     but may be spaced further apart (stride[0] >= cols), so a column range of a wider
//     matrix (q out of a fused qkv) is a valid operand without a copy.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

#include "tensor/dtype.hpp"

namespace purellm {

enum class Device : uint8_t { CPU, CUDA };

constexpr int kMaxDims = 4;

struct Tensor {
  DType dtype = DType::F32;
  int ndim = 0;
  std::array<int64_t, kMaxDims> shape{};   // outermost first
  std::array<int64_t, kMaxDims> stride{};  // in elements
  void* data = nullptr;
  Device device = Device::CPU;

  // A contiguous view over data with the given shape.
  static Tensor contiguous(void* data, DType dtype, std::initializer_list<int64_t> shape,
                           Device device = Device::CPU);
  // A contiguous view with the shape of `like` and the given dtype.
  static Tensor contiguous_like(const Tensor& like, DType dtype, void* data);

  int64_t dim(int i) const { return shape[static_cast<size_t>(i < 0 ? ndim + i : i)]; }
  int64_t numel() const;
  size_t nbytes() const { return dtype_bytes(dtype, numel()); }  // contiguous size
  bool is_contiguous() const;
  bool empty() const { return data == nullptr; }

  // Rows and columns of the tensor seen as a matrix: cols = last dim, rows = the rest.
  int64_t cols() const { return ndim == 0 ? 1 : shape[static_cast<size_t>(ndim - 1)]; }
  int64_t rows() const { return ndim == 0 ? 1 : numel() / cols(); }
  // Distance in elements between consecutive rows (requires the outer dims to be collapsible).
  int64_t row_stride() const { return ndim <= 1 ? cols() : stride[static_cast<size_t>(ndim - 2)]; }

  template <class T>
  T* ptr() const { return static_cast<T*>(data); }
  // Address of row r of the matrix view (works for block-quantized dtypes too).
  template <class T = void>
  T* row(int64_t r) const {
    auto* base = static_cast<char*>(data);
    return reinterpret_cast<T*>(base + dtype_bytes(dtype, r * row_stride()));
  }

  // Views (no copies).
  Tensor rows_view(int64_t first, int64_t count) const;  // rows [first, first+count)
  Tensor cols_view(int64_t first, int64_t count) const;  // columns [first, first+count)
  Tensor reshape(std::initializer_list<int64_t> shape) const;  // contiguous only
  Tensor select(int64_t index) const;                          // drop the outermost dim

  std::string describe() const;  // "BF16[64, 192]" for error messages
};

// Aligned host memory, owned. Move-only. 64-byte aligned (one cache line, one AVX-512 vector).
class AlignedBuffer {
 public:
  static constexpr size_t kAlign = 64;
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t bytes, bool huge_pages = false);
  ~AlignedBuffer();
  AlignedBuffer(AlignedBuffer&& o) noexcept { *this = std::move(o); }
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  void* data() const { return data_; }
  size_t size() const { return size_; }
  template <class T>
  T* as() const { return static_cast<T*>(data_); }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;  // huge-page buffers come from mmap, the rest from aligned_alloc
};

// A host tensor together with the memory it views. Used for weights converted at load,
// scratch activations on the CPU, and in tests.
struct OwnedTensor {
  AlignedBuffer buffer;
  Tensor view;

  static OwnedTensor zeros(DType dtype, std::initializer_list<int64_t> shape);
  Tensor& operator*() { return view; }
  const Tensor* operator->() const { return &view; }
};

}  // namespace purellm
