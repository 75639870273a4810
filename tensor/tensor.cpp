#include "tensor/tensor.hpp"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

#include "tensor/quant.hpp"

namespace purellm {

Tensor Tensor::contiguous(void* data, DType dtype, std::initializer_list<int64_t> shape,
                          Device device) {
  if (shape.size() > kMaxDims) throw std::invalid_argument("tensor has more than 4 dims");
  Tensor t;
  t.dtype = dtype;
  t.ndim = static_cast<int>(shape.size());
  t.data = data;
  t.device = device;
  size_t i = 0;
  for (int64_t s : shape) t.shape[i++] = s;
  int64_t stride = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    t.stride[static_cast<size_t>(d)] = stride;
    stride *= t.shape[static_cast<size_t>(d)];
  }
  return t;
}

Tensor Tensor::contiguous_like(const Tensor& like, DType dtype, void* data) {
  Tensor t = like;
  t.dtype = dtype;
  t.data = data;
  int64_t stride = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    t.stride[static_cast<size_t>(d)] = stride;
    stride *= t.shape[static_cast<size_t>(d)];
  }
  return t;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[static_cast<size_t>(i)];
  return n;
}

bool Tensor::is_contiguous() const {
  int64_t expect = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    const auto i = static_cast<size_t>(d);
    if (shape[i] != 1 && stride[i] != expect) return false;
    expect *= shape[i];
  }
  return true;
}

Tensor Tensor::rows_view(int64_t first, int64_t count) const {
  if (ndim < 1 || first < 0 || count < 0 || first + count > shape[0])
    throw std::out_of_range("rows_view out of range on " + describe());
  // Interleaved groups of 16 rows (quant.hpp): a view starts on a group and ends on one or at the end.
  if (is_interleaved(dtype) && (first % kR16 || (count % kR16 && first + count != shape[0])))
    throw std::invalid_argument("rows_view of rows " + std::to_string(first) + ".." + std::to_string(first + count) +
                                " of " + describe() + ": its rows come in groups of 16");
  Tensor t = *this;
  t.shape[0] = count;
  t.data = static_cast<char*>(data) + dtype_bytes(dtype, first * stride[0]);
  return t;
}

Tensor Tensor::cols_view(int64_t first, int64_t count) const {
  const auto last = static_cast<size_t>(ndim - 1);
  if (ndim < 1 || first < 0 || count < 0 || first + count > shape[last])
    throw std::out_of_range("cols_view out of range on " + describe());
  if (is_interleaved(dtype) && count != shape[last])
    throw std::invalid_argument("cols_view of " + describe() + ": its rows are interleaved, only whole rows");
  Tensor t = *this;
  t.shape[last] = count;
  t.data = static_cast<char*>(data) + dtype_bytes(dtype, first);
  return t;
}

Tensor Tensor::reshape(std::initializer_list<int64_t> new_shape) const {
  if (!is_contiguous()) throw std::invalid_argument("reshape of a non-contiguous " + describe());
  Tensor t = contiguous(data, dtype, new_shape, device);
  if (t.numel() != numel())
    throw std::invalid_argument("reshape of " + describe() + " changes the element count");
  return t;
}

Tensor Tensor::select(int64_t index) const {
  if (ndim < 1 || index < 0 || index >= shape[0])
    throw std::out_of_range("select out of range on " + describe());
  Tensor t;
  t.dtype = dtype;
  t.ndim = ndim - 1;
  t.device = device;
  for (int i = 1; i < ndim; ++i) {
    t.shape[static_cast<size_t>(i - 1)] = shape[static_cast<size_t>(i)];
    t.stride[static_cast<size_t>(i - 1)] = stride[static_cast<size_t>(i)];
  }
  t.data = static_cast<char*>(data) + dtype_bytes(dtype, index * stride[0]);
  return t;
}

std::string Tensor::describe() const {
  std::string s(dtype_name(dtype));
  s += "[";
  for (int i = 0; i < ndim; ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[static_cast<size_t>(i)]);
  }
  return s + "]";
}

AlignedBuffer::AlignedBuffer(size_t bytes, bool huge_pages) : size_(bytes) {
  if (bytes == 0) return;
  if (huge_pages) {
    // Anonymous memory aligned to 2 MiB (map 2 MiB extra, trim both ends) so transparent huge
    // pages can back it from the first byte; madvise is advisory and ignored where THP is off.
    constexpr size_t kHuge = size_t{2} << 20;
    const size_t span = (bytes + kHuge - 1) / kHuge * kHuge;
    char* raw = static_cast<char*>(
        mmap(nullptr, span + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (raw == MAP_FAILED) throw std::bad_alloc();
    char* aligned = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(raw) + kHuge - 1) & ~(kHuge - 1));
    if (aligned > raw) munmap(raw, static_cast<size_t>(aligned - raw));
    const size_t tail = static_cast<size_t>(raw + span + kHuge - (aligned + span));
    if (tail) munmap(aligned + span, tail);
    madvise(aligned, span, MADV_HUGEPAGE);
    data_ = aligned;
    size_ = span;
    mapped_ = true;
    return;
  }
  const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  data_ = std::aligned_alloc(kAlign, rounded);
  if (!data_) throw std::bad_alloc();
}

AlignedBuffer::~AlignedBuffer() {
  if (!data_) return;
  if (mapped_)
    munmap(data_, size_);
  else
    std::free(data_);
}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& o) noexcept {
  if (this != &o) {
    this->~AlignedBuffer();
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    mapped_ = std::exchange(o.mapped_, false);
  }
  return *this;
}

OwnedTensor OwnedTensor::zeros(DType dtype, std::initializer_list<int64_t> shape) {
  OwnedTensor t;
  t.view = Tensor::contiguous(nullptr, dtype, shape);
  t.buffer = AlignedBuffer(t.view.nbytes());
  if (t.view.nbytes()) std::memset(t.buffer.data(), 0, t.view.nbytes());
  t.view.data = t.buffer.data();
  return t;
}

}  // namespace purellm
