// bench: prefill and decode speed of whole models, in the spirit of llama-bench.
//
//   bench --shape gpt2 --shape tinyllama-1.1b -p 512 -n 32 -t 2 --dtype f32,bf16,q8_0,q4_0 -r 3
//   bench -m ../shared/testdata/models/stories260K -p 128 -n 64 -t 1,2 --json
//
// -m DIR loads a checkpoint; --shape NAME (benchmarks/shapes/NAME.json, or a path to a config
// .json) builds the model with random weights, so real shapes are measured without downloads.
// Every (model, dtype, threads, prompt length) is one row, run in a child process (so each row's
// peak RSS is its own): r repetitions of a prefill of p tokens and n decode steps on a fresh
// cache; medians with min-max. Decode GB/s = decode tok/s x weight bytes one token reads; "% bw"
// divides it by the read bandwidth of the same threads (the BandwidthProbe of bench_kernels,
// 512 MiB read as four streams per thread, best of 40 passes, measured in its own child just
// before and just after each row: the higher). Prefill GFLOP/s counts 2 flops per weight per
// token (weights per token ~ bytes per token / bytes per weight; attention excluded); "% of
// FMA" divides it by the F32 FMA throughput of the same threads (measure_fma_flops: the widest
// FMA loop, out of registers, best of 10 passes, likewise). On a shared machine run with
// OMP_WAIT_POLICY=passive.
#include <omp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "apps/app_common.hpp"
#include "models/model.hpp"
#include "tensor/cpu/bandwidth.hpp"
#include "tensor/cpu/cpu_backend.hpp"

using namespace purellm;

namespace {

const char* kUsage = R"(usage: bench (-m DIR | --shape NAME)... [options]

  -m, --model DIR       a checkpoint folder (or alias); repeatable
      --shape NAME      random weights from benchmarks/shapes/NAME.json (or a .json path); repeatable
  -p, --prompt N,...    prefill lengths (default 512)
  -n, --n-gen N         decode steps per repetition (default 128)
  -t, --threads N,...   thread counts (default: all cores)
      --dtype D,...     f32, f16, bf16, q8_0, q4_0 (default: as stored / f32)
      --kv-dtype D      the KV cache, f32 or f16 (default: as ask: f16 with q8_0 / q4_0; the
                        table's dtype column says "kv f16" where it is F16)
  -r, --reps N          repetitions per row (default 5)
      --json            one JSON object per row instead of the Markdown table
  -h, --help            this text
)";

struct Args {
  std::vector<std::string> models, shapes;
  std::vector<int64_t> prompts{512};
  int64_t n_gen = 128;
  std::vector<int64_t> threads;
  std::vector<std::string> dtypes;
  std::optional<DType> kv_dtype;
  int reps = 5;
  bool json = false;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t b = 0;
  while (b <= s.size()) {
    const size_t e = std::min(s.find(',', b), s.size());
    if (e > b) out.push_back(s.substr(b, e - b));
    b = e + 1;
  }
  return out;
}

std::vector<int64_t> int_list(const std::string& flag, const std::string& s, int64_t lo, int64_t hi) {
  std::vector<int64_t> v;
  for (const std::string& x : split(s)) v.push_back(app::parse_int(flag, x, lo, hi));
  if (v.empty()) throw std::runtime_error(flag + " needs a value");
  return v;
}

Args parse_args(int argc, char** argv) {
  Args a;
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) throw std::runtime_error(std::string(argv[i]) + " needs a value");
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (f == "-h" || f == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (f == "-m" || f == "--model") a.models.push_back(value(i));
    else if (f == "--shape") a.shapes.push_back(value(i));
    else if (f == "-p" || f == "--prompt") a.prompts = int_list(f, value(i), 1, 1 << 20);
    else if (f == "-n" || f == "--n-gen") a.n_gen = app::parse_int(f, value(i), 0, 1 << 20);
    else if (f == "-t" || f == "--threads") a.threads = int_list(f, value(i), 1, 1024);
    else if (f == "--dtype") a.dtypes = split(value(i));
    else if (f == "--kv-dtype") a.kv_dtype = app::parse_kv_dtype(value(i));
    else if (f == "-r" || f == "--reps") a.reps = static_cast<int>(app::parse_int(f, value(i), 1, 1000));
    else if (f == "--json") a.json = true;
    else throw std::runtime_error("unknown option " + f + " (see --help)");
  }
  if (a.models.empty() && a.shapes.empty()) throw std::runtime_error("give -m DIR or --shape NAME (see --help)");
  for (const std::string& d : a.dtypes) app::parse_weight_dtype(d);  // each one known, or the message
  if (a.threads.empty()) a.threads.push_back(omp_get_max_threads());
  return a;
}

// The table's name for a source: a shape's name ("tinyllama-1.1b", or a .json path's stem), a
// checkpoint's folder name.
std::string row_name(const std::string& source, bool is_shape) {
  const std::filesystem::path p(source);
  if (is_shape && p.extension() == ".json") return p.stem().string();
  return is_shape ? source : p.filename().string();
}

std::string shape_path(const std::string& name) {
  if (name.size() > 5 && name.substr(name.size() - 5) == ".json") return name;
  return std::string(PURELLM_SHAPES_DIR) + "/" + name + ".json";
}

// What one row measured (plain doubles: it crosses a pipe from the child).
struct Row {
  double prefill_tok_s[3];  // median, min, max
  double decode_tok_s[3];
  double weight_bytes_per_token;
  double peak_rss;
  double bandwidth;         // bytes/s, from the probe
  double fma_flops;         // F32 flops/s, from measure_fma_flops
  double flops_per_token;   // 2 x weights per token
  DType kv_dtype;
  int ok;
  char error[200];
};

double bytes_per_weight(DType d) { return static_cast<double>(traits(d).block_bytes) / traits(d).block_elems; }

void stats3(std::vector<double> v, double out[3]) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  out[0] = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  out[1] = v.front();
  out[2] = v.back();
}

// The measurement itself (runs in the child).
Row measure(const Args& a, const std::string& source, bool is_shape, const std::string& dtype, int threads,
            int64_t prompt) {
  Row row{};
  cpu::set_num_threads(threads);
  LoadOptions load;
  if (!dtype.empty()) load.weight_dtype = dtype_from_flag(dtype);
  load.kv_dtype = a.kv_dtype;
  std::unique_ptr<Model> model = is_shape ? random_model(read_json_file(shape_path(source)), load)
                                          : load_model(app::resolve_model(source).dir, load);
  const ModelInfo& info = model->info();
  const int64_t need = prompt + a.n_gen;
  if (need > info.max_context)
    throw std::runtime_error("prompt + n = " + std::to_string(need) + " is past the context of " +
                             std::to_string(info.max_context));
  std::vector<int32_t> ids(static_cast<size_t>(prompt));
  for (int64_t i = 0; i < prompt; ++i) ids[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7919 + 13) % info.vocab_size);
  std::vector<double> pre, dec;
  using clock = std::chrono::steady_clock;
  for (int r = 0; r <= a.reps; ++r) {  // repetition 0 warms up (page faults, scratch growth)
    Cache cache = model->make_cache(need);
    const auto t0 = clock::now();
    model->forward(ids, cache, Logits::Last);
    const auto t1 = clock::now();
    for (int64_t i = 0; i < a.n_gen; ++i) {
      const int32_t tok = static_cast<int32_t>((i * 31 + 7) % info.vocab_size);
      model->forward(std::span<const int32_t>(&tok, 1), cache, Logits::Last);
    }
    const auto t2 = clock::now();
    if (r == 0) continue;
    pre.push_back(static_cast<double>(prompt) / std::chrono::duration<double>(t1 - t0).count());
    if (a.n_gen > 0) dec.push_back(static_cast<double>(a.n_gen) / std::chrono::duration<double>(t2 - t1).count());
  }
  stats3(pre, row.prefill_tok_s);
  if (!dec.empty()) stats3(dec, row.decode_tok_s);
  row.weight_bytes_per_token = static_cast<double>(info.weight_bytes_per_token);
  const DType wd = load.weight_dtype.value_or(DType::F32);
  row.flops_per_token = 2.0 * row.weight_bytes_per_token / bytes_per_weight(wd);
  row.peak_rss = static_cast<double>(app::peak_rss_bytes());
  row.kv_dtype = info.kv_dtype;
  row.ok = 1;
  return row;
}

// f() in a child process; its Row comes back through a pipe. OpenMP never starts in the parent.
template <class F>
Row in_child(F f) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    close(fds[0]);
    Row row{};
    try {
      row = f();
    } catch (const std::exception& e) {
      std::snprintf(row.error, sizeof(row.error), "%s", e.what());
    }
    const ssize_t w = write(fds[1], &row, sizeof(row));
    _exit(w == static_cast<ssize_t>(sizeof(row)) ? 0 : 1);
  }
  close(fds[1]);
  Row row{};
  size_t got = 0;
  while (got < sizeof(row)) {
    const ssize_t n = read(fds[0], reinterpret_cast<char*>(&row) + got, sizeof(row) - got);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (got != sizeof(row)) std::snprintf(row.error, sizeof(row.error), "the measuring process died (status %d)", status);
  return row;
}

std::string range(const double v[3]) {
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%.1f (%.1f-%.1f)", v[0], v[1], v[2]);
  return buf;
}

// The machine's limits for `threads`, measured in a child (its 512 MiB stay out of the rows)
// just before and just after each row, since a shared machine's bandwidth drifts by tens of
// percent within minutes: the best of 40 read passes (about half a second, so a busy neighbour
// for a moment does not lower it) and of 10 FMA passes. A row is divided by the higher of the
// two: one probe alone, caught in a slow minute, once put a decode row at 164% of "the limit".
Row measure_limits(int threads) {
  return in_child([&] {
    Row r{};
    cpu::BandwidthProbe probe(size_t{512} << 20);
    r.bandwidth = probe.measure(threads, 40);
    r.fma_flops = cpu::measure_fma_flops(threads);
    r.ok = 1;
    return r;
  });
}

// "lo-hi" of values / unit with one decimal ("-" for none).
std::string span_of(const std::vector<double>& values, double unit) {
  if (values.empty()) return "-";
  const auto [lo, hi] = std::minmax_element(values.begin(), values.end());
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.1f-%.1f", *lo / unit, *hi / unit);
  return buf;
}

int run(const Args& a) {
  std::vector<std::pair<std::string, bool>> sources;
  for (const auto& m : a.models) sources.emplace_back(m, false);
  for (const auto& s : a.shapes) sources.emplace_back(s, true);
  const std::vector<std::string> dtypes = a.dtypes.empty() ? std::vector<std::string>{""} : a.dtypes;
  if (!a.json) {
    std::printf("| model | dtype | threads | prefill tok/s | decode tok/s | decode GB/s | %% of bw | prefill GFLOP/s "
                "| %% of FMA | peak RSS MB |\n");
    std::printf("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  }
  int failures = 0;
  std::vector<std::vector<double>> bw(a.threads.size()), fma(a.threads.size());  // per row, for the footer
  for (const auto& [source, is_shape] : sources)
    for (const std::string& dt : dtypes)
      for (size_t ti = 0; ti < a.threads.size(); ++ti)
        for (int64_t p : a.prompts) {
          const int threads = static_cast<int>(a.threads[ti]);
          Row limits = measure_limits(threads);
          const Row r = in_child([&] { return measure(a, source, is_shape, dt, threads, p); });
          const std::string name = row_name(source, is_shape);
          const std::string dname = dt.empty() ? "stored" : dt;
          if (!r.ok) {
            ++failures;
            std::fprintf(stderr, "bench: %s %s t%d p%lld: %s\n", name.c_str(), dname.c_str(), threads,
                         static_cast<long long>(p), r.error);
            continue;
          }
          const Row after = measure_limits(threads);
          limits.bandwidth = std::max(limits.bandwidth, after.bandwidth);
          limits.fma_flops = std::max(limits.fma_flops, after.fma_flops);
          bw[ti].push_back(limits.bandwidth);
          fma[ti].push_back(limits.fma_flops);
          const double gbs = r.decode_tok_s[0] * r.weight_bytes_per_token / 1e9;
          const double pct = limits.bandwidth > 0 ? 100.0 * gbs * 1e9 / limits.bandwidth : 0.0;
          const double gflops = r.prefill_tok_s[0] * r.flops_per_token / 1e9;
          const double pct_fma = limits.fma_flops > 0 ? 100.0 * gflops * 1e9 / limits.fma_flops : 0.0;
          if (a.json) {
            std::printf("{\"shape\": \"%s\", \"dtype\": \"%s\", \"threads\": %d, \"prefill_tokens\": %lld, "
                        "\"prefill_tok_s\": %.3f, \"decode_tokens\": %lld, \"decode_tok_s\": %.3f, "
                        "\"weight_bytes_per_token\": %.0f, \"decode_gb_s\": %.4f, \"bandwidth_gb_s\": %.3f, "
                        "\"pct_bandwidth\": %.2f, \"prefill_gflop_s\": %.6g, \"fma_gflop_s\": %.6g, "
                        "\"pct_fma\": %.2f, \"peak_rss_bytes\": %.0f, \"kv_dtype\": \"%s\"}\n",
                        name.c_str(), dname.c_str(), threads, static_cast<long long>(p), r.prefill_tok_s[0],
                        static_cast<long long>(a.n_gen), r.decode_tok_s[0], r.weight_bytes_per_token, gbs,
                        limits.bandwidth / 1e9, pct, gflops, limits.fma_flops / 1e9, pct_fma, r.peak_rss,
                        std::string(dtype_name(r.kv_dtype)).c_str());
          } else {
            std::printf("| %s | %s | %d | %s (p%lld) | %s | %.2f | %.0f%% | %.1f | %.0f%% | %.0f |\n", name.c_str(),
                        (dname + (r.kv_dtype == DType::F16 ? ", kv f16" : "")).c_str(), threads,
                        range(r.prefill_tok_s).c_str(), static_cast<long long>(p),
                        range(r.decode_tok_s).c_str(), gbs, pct, gflops, pct_fma, r.peak_rss / 1e6);
          }
          std::fflush(stdout);
        }
  if (!a.json) {
    std::printf("\nread bandwidth (BandwidthProbe, 512 MiB, the higher of before and after each row; "
                "lowest-highest):");
    for (size_t ti = 0; ti < a.threads.size(); ++ti)
      std::printf(" %lld threads %s GB/s;", static_cast<long long>(a.threads[ti]), span_of(bw[ti], 1e9).c_str());
    std::printf("\nF32 FMA throughput (measure_fma_flops, the higher of before and after each row):");
    for (size_t ti = 0; ti < a.threads.size(); ++ti)
      std::printf(" %lld threads %s GFLOP/s;", static_cast<long long>(a.threads[ti]), span_of(fma[ti], 1e9).c_str());
    std::printf(" decode %lld tokens, %d repetitions, medians (min-max)\n", static_cast<long long>(a.n_gen), a.reps);
  }
  return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_args(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench: %s\n", e.what());
    return 1;
  }
}
