#!/usr/bin/env bash
# Regenerates benchmarks/RESULTS.md: the `bench` app's tables on this machine (random weights
# with real shapes, benchmarks/shapes/*.json), with the machine and the commands that made them.
#   benchmarks/results.sh [REPS]        (default 3; build first: scripts/setup.sh release)
# Run it on a quiet machine: every row is a median, but a busy neighbour still shows.
set -euo pipefail
cd "$(dirname "$0")/.."
reps="${1:-3}"
bench=build/release/bin/bench
out=benchmarks/RESULTS.md
[ -x "$bench" ] || { echo "build first: scripts/setup.sh release" >&2; exit 1; }

# Each table: a title, then the bench arguments.
tables=(
  "Decode and prefill, every weight dtype, 2 threads"
  "--shape gpt2 --shape tinyllama-1.1b -p 512 -n 64 -t 2 --dtype f32,f16,bf16,q8_0,q4_0"
  "Decode from a short prompt (the context llama-bench's tg128 decodes in), 2 threads"
  "--shape gpt2 --shape tinyllama-1.1b -p 16 -n 128 -t 2 --dtype f32,f16,bf16,q8_0,q4_0"
  "One thread against two (decode must scale)"
  "--shape gpt2 -p 128 -n 64 -t 1,2 --dtype f32,q8_0"
  "More shapes, as stored in their checkpoints (BF16) and as F32"
  "--shape smollm2-135m --shape gpt2-medium --shape granite-4.0-h-350m -p 128 -n 64 -t 2 --dtype f32,bf16"
  "Granite 4.0 H 350m: prefill length and decode context (Mamba2 state is constant)"
  "--shape granite-4.0-h-350m -p 128,1024 -n 64 -t 2 --dtype bf16"
)

{
  echo "# Benchmark results"
  echo
  echo "Made by \`benchmarks/results.sh $reps\` on $(date -u +%Y-%m-%d) at commit $(git rev-parse --short HEAD)."
  echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores,"
  echo "$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) of memory; CPU flags: $(grep -m1 -o -w -E 'avx512f|avx512_vnni|avx512_bf16|avx2|fma|f16c' /proc/cpuinfo | sort -u | tr '\n' ' ')."
  echo "OpenMP runtime: $(ldd "$bench" | awk '/lib(g?omp|iomp5)/ {print $1; exit}')."
  echo
  echo "Columns: prefill and decode tok/s are medians of $reps repetitions (min-max); decode GB/s is"
  echo "decode tok/s x the weight bytes one token reads (not the KV cache attention reads: at 512"
  echo "tokens 38 MB per GPT-2 token in F32, beside 498 MB of F32 weights); % of bw divides it by the"
  echo "read bandwidth measured with the same threads just before and just after each row, the"
  echo "higher of the two (a 512 MiB sum read as four sequential streams per thread, its parts"
  echo "shared out between the threads as the GEMV's rows are, so a slower core reads less; the"
  echo "lowest and highest are printed under each table, as this machine's bandwidth drifts);"
  echo "prefill GFLOP/s counts 2 flops per weight per token, and % of FMA divides it by the F32 FMA"
  echo "throughput measured likewise (independent FMA chains out of registers). Rows marked"
  echo "\"kv f16\" keep the KV cache in F16 (the default under Q8_0 / Q4_0 weights, as llama-bench"
  echo "does for every row); the others in F32. On this AVX-512 VNNI machine Q8_0 / Q4_0 matrices are"
  echo "interleaved by 16 rows at load (Q8_0_R16 / Q4_0_R16) and run on the integer kernels at any"
  echo "prompt length, hence prefill above the F32 FMA peak."
  for ((i = 0; i < ${#tables[@]}; i += 2)); do
    echo
    echo "## ${tables[i]}"
    echo
    echo "\`bench ${tables[i + 1]} -r $reps\`"
    echo
    # shellcheck disable=SC2086
    "$bench" ${tables[i + 1]} -r "$reps"
  done
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out"
