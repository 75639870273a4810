// The CUDA backend plug-in (libpurellm_cuda.so): the Backend interface on one NVIDIA GPU.
//
// Built only with -DPURELLM_CUDA=ON and loaded at run time by tensor/backend_loader.cpp when a
// program is given `--device cuda`; no program links against CUDA.
//   memory: cudaMalloc'd buffers owned by shared_ptrs; weights are copied to the GPU once, at
//           load, by adopt_weight (the loader then frees or drops its host copy).
//   ops:    the shape checks the CPU uses (reference.hpp), then one kernel from kernels.cuh,
//           queued on the backend's stream. Only download() and argmax() wait for the GPU.
// Operands must be tensors of this backend (alloc, alloc_tensor, adopt_weight): a host tensor
// passed to an op is an error naming the op, not a crash.
#include <algorithm>
#include <cstdio>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>

#include "tensor/backend_loader.hpp"
#include "tensor/cpu/reference.hpp"
#include "tensor/cuda/runtime.cuh"
#include "tensor/cuda/kernels.cuh"

namespace purellm::cuda {
namespace {

void check(cudaError_t err, const std::string& what) {
  if (err != cudaSuccess) throw std::runtime_error("cuda: " + what + ": " + cudaGetErrorString(err));
}

Mat mat(const Tensor& t) { return {t.ptr<float>(), t.row_stride()}; }
const float* ptr_or_null(const Tensor& t) { return t.empty() ? nullptr : t.ptr<float>(); }

// Bytes from the first element of t to just past its last (rows are row_stride() apart).
size_t span_bytes(const Tensor& t) {
  return t.numel() == 0 ? 0 : dtype_bytes(t.dtype, (t.rows() - 1) * t.row_stride() + t.cols());
}

unsigned blocks_for(int64_t n, int per_block) { return static_cast<unsigned>((n + per_block - 1) / per_block); }

// The smallest power of two >= n and >= 32 (one warp): a reduction's block size.
unsigned pow2_threads(int64_t n) {
  unsigned t = 32;
  while (t < n) t *= 2;
  return t;
}

class CudaBackend final : public Backend {
 public:
  CudaBackend() {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err == cudaErrorInsufficientDriver)
      throw std::runtime_error(std::string("no usable CUDA GPU (") + cudaGetErrorString(err) +
                               "): no NVIDIA driver is installed, or it is older than the CUDA toolkit this "
                               "plug-in was built with (on a Jetson, build it with JetPack's nvcc)");
    if (err != cudaSuccess) throw std::runtime_error(std::string("no usable CUDA GPU (") + cudaGetErrorString(err) + ")");
    if (count == 0) throw std::runtime_error("no CUDA GPU found");
    check(cudaSetDevice(0), "cudaSetDevice");
    check(cudaGetDeviceProperties(&props_, 0), "cudaGetDeviceProperties");
    check(cudaStreamCreate(&stream_), "cudaStreamCreate");
    result_ = device_buffer(sizeof(int64_t));
  }

  std::string name() const override { return std::string("cuda (") + props_.name + ")"; }
  Device device() const override { return Device::CUDA; }

  // ---- memory -------------------------------------------------------------------------------

  std::shared_ptr<void> alloc(size_t bytes) override {
    std::shared_ptr<void> memory = device_buffer(bytes);
    check(cudaMemsetAsync(memory.get(), 0, bytes, stream_), "cudaMemsetAsync");
    return memory;
  }

  // Host to device: copies from pageable memory return once the data is staged, so `host`
  // may change as soon as this returns.
  void upload(const Tensor& dst, const void* host) override {
    need_device("upload", dst);
    if (dst.numel() == 0) return;
    const size_t width = dtype_bytes(dst.dtype, dst.cols()), pitch = dtype_bytes(dst.dtype, dst.row_stride());
    check(cudaMemcpy2DAsync(dst.data, pitch, host, width, width, static_cast<size_t>(dst.rows()),
                            cudaMemcpyHostToDevice, stream_),
          "upload of " + dst.describe());
  }

  void download(void* host, const Tensor& src) override {
    need_device("download", src);
    if (src.numel() == 0) return;
    const size_t width = dtype_bytes(src.dtype, src.cols()), pitch = dtype_bytes(src.dtype, src.row_stride());
    check(cudaMemcpy2DAsync(host, width, src.data, pitch, width, static_cast<size_t>(src.rows()),
                            cudaMemcpyDeviceToHost, stream_),
          "download of " + src.describe());
    synchronize();
  }

  // The weight's bytes (its whole span, strides kept) copied once into GPU memory.
  Tensor adopt_weight(const Tensor& host, bool, std::shared_ptr<void>& keep) override {
    if (host.device != Device::CPU) throw std::invalid_argument("adopt_weight: " + host.describe() + " is not on the host");
    const size_t bytes = span_bytes(host);
    keep = device_buffer(bytes);
    if (bytes) check(cudaMemcpyAsync(keep.get(), host.data, bytes, cudaMemcpyHostToDevice, stream_), "weight upload");
    Tensor t = host;
    t.data = keep.get();
    t.device = Device::CUDA;
    return t;
  }

  void synchronize() override { check(cudaStreamSynchronize(stream_), "synchronize"); }

  bool supports(Op op, DType w) const override {
    if (op == Op::Matmul || op == Op::Embed) return w == DType::F32 || w == DType::F16 || w == DType::BF16;
    return w == DType::F32;
  }

  // ---- elementwise --------------------------------------------------------------------------

  void add(const Tensor& out, const Tensor& a, const Tensor& b) override { binary("add", out, a, b, Add{}); }
  void mul(const Tensor& out, const Tensor& a, const Tensor& b) override { binary("mul", out, a, b, Mul{}); }
  void add_scaled(const Tensor& out, const Tensor& x, float s) override {
    binary("add_scaled", out, out, x, AddScaled{s});
  }
  void scale(const Tensor& out, const Tensor& x, float s) override { unary("scale", out, x, Scale{s}); }
  void copy(const Tensor& out, const Tensor& x) override { unary("copy", out, x, Identity{}); }
  void gelu(const Tensor& out, const Tensor& x) override { unary("gelu", out, x, Gelu{}); }
  void gelu_tanh(const Tensor& out, const Tensor& x) override { unary("gelu_tanh", out, x, GeluTanh{}); }
  void relu(const Tensor& out, const Tensor& x) override { unary("relu", out, x, Relu{}); }
  void silu(const Tensor& out, const Tensor& x) override { unary("silu", out, x, Silu{}); }
  void silu_mul(const Tensor& out, const Tensor& gate, const Tensor& up) override {
    binary("silu_mul", out, gate, up, SiluMul{});
  }

  // ---- rows ---------------------------------------------------------------------------------

  void layernorm(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b, float eps) override {
    ref::check_norm("layernorm", out, x, w, b);
    need_device("layernorm", {&out, &x, &w, &b});
    launch(layernorm_kernel, dim3(static_cast<unsigned>(x.rows())), kThreads, mat(out), mat(x), w.ptr<const float>(),
           ptr_or_null(b), x.cols(), eps);
  }

  void rmsnorm(const Tensor& out, const Tensor& x, const Tensor& w, float eps) override {
    ref::check_norm("rmsnorm", out, x, w, Tensor{});
    need_device("rmsnorm", {&out, &x, &w});
    launch(rmsnorm_kernel, dim3(static_cast<unsigned>(x.rows())), kThreads, mat(out), mat(x), w.ptr<const float>(),
           x.cols(), eps);
  }

  void softmax(const Tensor& out, const Tensor& x) override {
    ref::check_same_shape("softmax", out, x);
    need_device("softmax", {&out, &x});
    launch(softmax_kernel, dim3(static_cast<unsigned>(x.rows())), kThreads, mat(out), mat(x), x.cols());
  }

  int64_t argmax(const Tensor& x) override {
    ref::check_argmax(x);
    need_device("argmax", {&x});
    auto* result = static_cast<int64_t*>(result_.get());
    launch(argmax_kernel, dim3(1), kThreads, result, x.ptr<const float>(), x.cols());
    int64_t index = 0;
    check(cudaMemcpyAsync(&index, result, sizeof index, cudaMemcpyDeviceToHost, stream_), "argmax result");
    synchronize();
    return index;
  }

  // ---- embedding, matmul, rotary, attention -------------------------------------------------

  void embed(const Tensor& out, const Tensor& table, std::span<const int32_t> ids) override {
    ref::check_embed(out, table, ids);
    need_device("embed", {&out, &table});
    const int64_t T = static_cast<int64_t>(ids.size()), D = table.cols();
    if (T == 0) return;
    const size_t bytes = ids.size_bytes();
    if (bytes > ids_bytes_) ids_ = device_buffer(ids_bytes_ = std::max<size_t>(bytes, 4096));
    auto* dev_ids = static_cast<int32_t*>(ids_.get());
    check(cudaMemcpyAsync(dev_ids, ids.data(), bytes, cudaMemcpyHostToDevice, stream_), "token ids upload");
    const unsigned blocks = blocks_for(T * D, kThreads);
    switch (table.dtype) {
      case DType::F32: return launch(embed_kernel<F32W>, dim3(blocks), kThreads, mat(out), table.ptr<const float>(),
                                     table.row_stride(), static_cast<const int32_t*>(dev_ids), T, D);
      case DType::F16: return launch(embed_kernel<F16W>, dim3(blocks), kThreads, mat(out), table.ptr<const uint16_t>(),
                                     table.row_stride(), static_cast<const int32_t*>(dev_ids), T, D);
      case DType::BF16: return launch(embed_kernel<BF16W>, dim3(blocks), kThreads, mat(out), table.ptr<const uint16_t>(),
                                      table.row_stride(), static_cast<const int32_t*>(dev_ids), T, D);
      default: throw std::invalid_argument("embed: unsupported table " + table.describe());
    }
  }

  void matmul(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias) override {
    ref::check_matmul(out, x, w, bias);
    need_device("matmul", {&out, &x, &w, &bias});
    switch (w.dtype) {
      case DType::F32: return matmul_as<F32W>(out, x, w, bias);
      case DType::F16: return matmul_as<F16W>(out, x, w, bias);
      case DType::BF16: return matmul_as<BF16W>(out, x, w, bias);
      default: throw std::invalid_argument("matmul: unsupported weight " + w.describe());
    }
  }

  void rope(const Tensor& x, int n_heads, int head_dim, int rot_dims, int64_t pos0, const Tensor& cos,
            const Tensor& sin) override {
    ref::check_rope(x, n_heads, head_dim, rot_dims, pos0, cos, sin);
    need_device("rope", {&x, &cos, &sin});
    const int half = rot_dims / 2;
    launch(rope_kernel, dim3(blocks_for(x.rows() * n_heads * half, kThreads)), kThreads, mat(x), x.rows(), n_heads,
           head_dim, half, pos0, mat(cos), mat(sin));
  }

  void attention(const Tensor& out, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                 const AttentionArgs& a) override {
    ref::check_attention(out, q, k_cache, v_cache, a);
    need_device("attention", {&out, &q, &k_cache, &v_cache, &a.alibi_slopes, &a.probs});
    if (a.head_dim > kMaxHeadDim)
      throw std::invalid_argument("attention: head_dim " + std::to_string(a.head_dim) + " > " +
                                  std::to_string(kMaxHeadDim) + " is not supported by the cuda backend");
    AttentionParams p{mat(out), mat(q), mat(k_cache), mat(v_cache), a.n_heads, a.n_heads / a.n_kv_heads, a.head_dim,
                      q.rows(), a.pos0, a.window, a.scale, ptr_or_null(a.alibi_slopes),
                      a.probs.empty() ? nullptr : a.probs.ptr<float>(), a.probs.empty() ? 0 : a.probs.dim(2)};
    launch(attention_kernel, dim3(static_cast<unsigned>(a.n_heads * q.rows())), kAttnThreads, p);
  }

  // ---- state-space (Mamba2) -----------------------------------------------------------------

  void conv1d_causal(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias,
                     const Tensor& state) override {
    ref::check_conv1d(out, x, w, bias, state);
    need_device("conv1d_causal", {&out, &x, &w, &bias, &state});
    if (w.cols() > kMaxConvWidth)
      throw std::invalid_argument("conv1d_causal: kernel width " + std::to_string(w.cols()) + " > " +
                                  std::to_string(kMaxConvWidth) + " is not supported by the cuda backend");
    if (x.rows() == 0) return;  // no new inputs: the state stays as it is
    launch(conv1d_causal_kernel, dim3(blocks_for(x.cols(), kThreads)), kThreads, mat(out), mat(x), mat(w),
           ptr_or_null(bias), mat(state), x.rows(), x.cols(), static_cast<int>(w.cols()));
  }

  void ssm_scan(const Tensor& y, const Tensor& x, const Tensor& dt, const Tensor& B, const Tensor& C,
                const Tensor& A_log, const Tensor& D, const Tensor& dt_bias, const Tensor& state,
                const SsmArgs& a) override {
    ref::check_ssm(y, x, dt, B, C, A_log, D, dt_bias, state, a);
    need_device("ssm_scan", {&y, &x, &dt, &B, &C, &A_log, &D, &dt_bias, &state});
    if (a.d_state > kMaxThreads)
      throw std::invalid_argument("ssm_scan: d_state " + std::to_string(a.d_state) + " > " +
                                  std::to_string(kMaxThreads) + " is not supported by the cuda backend");
    if (x.rows() == 0) return;
    SsmParams p{mat(y), mat(x), mat(dt), mat(B), mat(C), A_log.ptr<const float>(), D.ptr<const float>(),
                dt_bias.ptr<const float>(), state.ptr<float>(), x.rows(), a.head_dim, a.d_state,
                a.n_heads / a.n_groups, a.dt_min, a.dt_max};
    launch(ssm_scan_kernel, dim3(static_cast<unsigned>(a.n_heads * a.head_dim)), pow2_threads(a.d_state), p);
  }

 private:
  // GPU memory (not cleared), freed when the last owner lets go.
  std::shared_ptr<void> device_buffer(size_t bytes) {
    void* p = nullptr;
    check(cudaMalloc(&p, std::max<size_t>(bytes, 256)),
          "cudaMalloc of " + std::to_string(bytes >> 20) + " MiB (GPU " + props_.name + ")");
    return std::shared_ptr<void>(p, [](void* q) { cudaFree(q); });
  }

  static void need_device(const char* op, std::initializer_list<const Tensor*> operands) {
    for (const Tensor* t : operands)
      if (!t->empty() && t->device != Device::CUDA)
        throw std::invalid_argument(std::string(op) + ": operand " + t->describe() +
                                    " is host memory; the cuda backend needs tensors from its alloc() or "
                                    "adopt_weight()");
  }
  static void need_device(const char* op, const Tensor& t) { need_device(op, {&t}); }

  // Queues kernel<<<grid, threads>>>(args...) on the stream; an empty grid launches nothing.
  template <class... Params, class... Args>
  void launch(void (*kernel)(Params...), dim3 grid, unsigned threads, Args... args) {
    if (grid.x == 0 || grid.y == 0) return;
    launch_kernel(kernel, grid, dim3(threads), stream_, args...);
    check(cudaGetLastError(), "kernel launch");
  }

  template <class F>
  void unary(const char* op, const Tensor& out, const Tensor& x, F f) {
    ref::check_same_shape(op, out, x);
    need_device(op, {&out, &x});
    launch(map1_kernel<F>, dim3(blocks_for(x.rows() * x.cols(), kThreads)), kThreads, mat(out), mat(x), x.rows(),
           x.cols(), f);
  }

  template <class F>
  void binary(const char* op, const Tensor& out, const Tensor& a, const Tensor& b, F f) {
    ref::check_same_shape(op, out, a);
    ref::check_same_shape(op, out, b);
    need_device(op, {&out, &a, &b});
    launch(map2_kernel<F>, dim3(blocks_for(a.rows() * a.cols(), kThreads)), kThreads, mat(out), mat(a), mat(b),
           a.rows(), a.cols(), f);
  }

  // A few rows of x (decode) run as a GEMV that reads each weight once; more as a tiled GEMM.
  template <class W>
  void matmul_as(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias) {
    const int64_t T = x.rows(), K = x.cols(), N = w.rows();
    const auto* weights = static_cast<const typename W::T*>(w.data);
    if (T == 0) return;
    if (T <= kGemvRows)
      launch(gemv_kernel<W>, dim3(static_cast<unsigned>(N)), kGemvThreads, mat(out), mat(x), weights, w.row_stride(),
             ptr_or_null(bias), static_cast<int>(T), K);
    else
      launch(gemm_kernel<W>, dim3(blocks_for(N, kTile), blocks_for(T, kTile)), kThreads, mat(out), mat(x), weights,
             w.row_stride(), ptr_or_null(bias), T, N, K);
  }

  cudaDeviceProp props_{};
  cudaStream_t stream_ = nullptr;
  std::shared_ptr<void> result_;  // argmax's answer: one int64 on the GPU
  std::shared_ptr<void> ids_;     // embed's token ids, grown to the longest input seen
  size_t ids_bytes_ = 0;
};

}  // namespace
}  // namespace purellm::cuda

// ---- the plug-in's entry points (see backend_loader.hpp) ---------------------------------------

extern "C" __attribute__((visibility("default"))) int purellm_plugin_abi() { return purellm::kPluginAbi; }

extern "C" __attribute__((visibility("default"))) purellm::Backend* purellm_create_backend(char* error,
                                                                                          size_t error_size) {
  try {
    return new purellm::cuda::CudaBackend();
  } catch (const std::exception& e) {
    std::snprintf(error, error_size, "%s", e.what());
    return nullptr;
  }
}
