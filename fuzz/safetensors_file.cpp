// Fuzz target: a whole safetensors file (8-byte length, header, data) opened the way a model
// folder's file is, in both load modes, through SafetensorsFile and WeightFiles. The bytes
// live in a memfd, opened by its /proc/self/fd path: the real open/fstat/pread/mmap code runs
// with no disk I/O. Every byte of every accepted tensor is read, so a view that points outside
// the mapping or the copy is caught (ASan, or SIGBUS past the end of a mapping).
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz/fuzz_util.hpp"
#include "tensor/safetensors.hpp"

using namespace purellm;

namespace {

struct MemFile {
  int fd = memfd_create("fuzz.safetensors", MFD_CLOEXEC);
  std::string path = "/proc/self/fd/" + std::to_string(fd);
};

void set_contents(const MemFile& f, std::string_view bytes) {
  FUZZ_CHECK(f.fd >= 0);
  FUZZ_CHECK(ftruncate(f.fd, 0) == 0);
  FUZZ_CHECK(pwrite(f.fd, bytes.data(), bytes.size(), 0) == ssize_t(bytes.size()));
}

// Sums every byte of the tensor, so each one is actually read.
unsigned touch(const Tensor& t) {
  unsigned sum = 0;
  const auto* p = static_cast<const unsigned char*>(t.data);
  for (size_t i = 0; i < t.nbytes(); ++i) sum += p[i];
  return sum;
}

void open_file(const std::string& path, LoadMode mode, std::string_view bytes) {
  std::unique_ptr<SafetensorsFile> file;
  try {
    file = SafetensorsFile::open(path, mode);
  } catch (const SafetensorsError&) {
    return;
  }
  FUZZ_CHECK(file->data_bytes() <= bytes.size());
  uint64_t total = 0;
  for (const TensorInfo& info : file->tensors()) {
    const Tensor t = file->tensor(info);
    FUZZ_CHECK(t.nbytes() == info.end - info.begin);
    total += t.nbytes();
    volatile unsigned sink = touch(t);
    (void)sink;
  }
  FUZZ_CHECK(total <= file->data_bytes());
  // The same file as a one-file model folder gives the same tensors.
  const WeightFiles weights = WeightFiles::open(path, mode);
  FUZZ_CHECK(weights.names().size() == file->tensors().size());
  FUZZ_CHECK(weights.total_bytes() == total);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const MemFile file;
  const std::string_view bytes = fuzz::as_text(data, size);
  set_contents(file, bytes);
  open_file(file.path, LoadMode::Copy, bytes);
  open_file(file.path, LoadMode::Mmap, bytes);
  return 0;
}
