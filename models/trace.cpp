#include "models/trace.hpp"

#include <stdexcept>

#include "tensor/safetensors_writer.hpp"

namespace purellm {

std::string trace_name(std::string_view name, int layer) {
  return layer < 0 ? std::string(name) : std::string(name) + "." + std::to_string(layer);
}

void TraceRecorder::record(std::string_view name, int layer, const Tensor& t) {
  const std::string key = trace_name(name, layer);
  if (index_.count(key)) return;
  if (t.device != Device::CPU || t.dtype != DType::F32)
    throw std::runtime_error("trace \"" + key + "\": only F32 tensors in host memory can be traced, got " + t.describe());
  Entry e{key, {}, {}};
  for (int i = 0; i < t.ndim; ++i) e.shape.push_back(t.dim(i));
  e.values.reserve(static_cast<size_t>(t.numel()));
  for (int64_t r = 0; r < t.rows(); ++r) e.values.insert(e.values.end(), t.row<float>(r), t.row<float>(r) + t.cols());
  index_.emplace(key, entries_.size());
  entries_.push_back(std::move(e));
}

const TraceRecorder::Entry* TraceRecorder::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

Tensor TraceRecorder::view(const std::string& name) const {
  const Entry* e = find(name);
  if (!e) throw std::runtime_error("trace: no tensor named \"" + name + "\" was recorded");
  Tensor t = Tensor::contiguous(const_cast<float*>(e->values.data()), DType::F32, {1});
  t.ndim = static_cast<int>(e->shape.size());
  int64_t stride = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    t.shape[static_cast<size_t>(i)] = e->shape[static_cast<size_t>(i)];
    t.stride[static_cast<size_t>(i)] = stride;
    stride *= e->shape[static_cast<size_t>(i)];
  }
  return t;
}

void TraceRecorder::write(const std::string& path, std::span<const int32_t> input_ids,
                          const std::map<std::string, std::string>& metadata) const {
  SafetensorsWriter w;
  const std::vector<int64_t> ids(input_ids.begin(), input_ids.end());
  w.add("input_ids", DType::I64, {static_cast<int64_t>(ids.size())}, ids.data());
  for (const Entry& e : entries_) w.add(e.name, DType::F32, e.shape, e.values.data());
  for (const auto& [key, value] : metadata) w.set_metadata(key, value);
  w.write(path);
}

}  // namespace purellm
