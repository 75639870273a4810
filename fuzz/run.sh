#!/usr/bin/env bash
# Runs every fuzz target for a bounded time and fails on any finding (crash, sanitizer report,
# leak, timeout, out-of-memory). Needs the `fuzz` preset built:
#   cmake --preset fuzz && cmake --build --preset fuzz
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]       (default 30 s, every target)
# Targets run side by side, one per core ($PURELLM_FUZZ_JOBS overrides).
# The corpus lives in build/fuzz/corpus/<target> (seeded by fuzz/make_corpus.py from
# fuzz/seeds/ and the shared test data; it grows between local runs). A finding is saved as
# build/fuzz/findings/<target>/crash-* (or leak-, timeout-, oom-): copy it to
# fuzz/regressions/<target>/ with the fix, where CTest replays it in every build.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
shift || true
build=build/fuzz
export PURELLM_TESTDATA="${PURELLM_TESTDATA:-$(cd .. && pwd)/shared/testdata}"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for exe in "$build"/bin/fuzz_*; do targets+=("${exe##*/fuzz_}"); done
fi

# Longest input per target: above its largest real seed, small enough to stay fast.
max_len() {
  case "$1" in
    tokenizer_json) echo 20000 ;;
    safetensors_header | tokenizer_config) echo 8192 ;;
    prompt_ids) echo 256 ;;
    tokenizer_encode | tokenizer_decode) echo 1024 ;;
    *) echo 4096 ;;
  esac
}
dict_for() {
  case "$1" in
    safetensors_*) echo safetensors ;;
    model_config) echo config ;;
    tokenizer_json | tokenizer_config) echo tokenizer ;;
    *) echo "" ;;
  esac
}

# One target: fuzz it, then write its result line to findings/<target>/result.
fuzz_one() {
  local t="$1" dict=() status=0 log="$build/findings/$1/last_run.log"
  mkdir -p "$build/corpus/$t" "$build/findings/$t"
  rm -f "$build/findings/$t"/{crash,leak,timeout,oom,slow-unit}-*  # from an earlier run
  cp -n "$build/corpus.new/$t"/* "$build/corpus/$t"/ 2>/dev/null || true
  if [ -n "$(dict_for "$t")" ]; then
    cat fuzz/dicts/json.dict "fuzz/dicts/$(dict_for "$t").dict" >"$build/dicts/$t.dict"
    dict=(-dict="$build/dicts/$t.dict")
  fi
  "$build/bin/fuzz_$t" "$build/corpus/$t" "${dict[@]}" -max_total_time="$seconds" -max_len="$(max_len "$t")" \
    -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$build/findings/$t/" >"$log" 2>&1 || status=$?
  local execs rate cov result=ok
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2 || true)
  if [ "$status" != 0 ]; then
    result="FAILED (exit $status): $(grep -m1 -E 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|runtime error|FUZZ_CHECK|terminate called|what\(\)' "$log" || true)"
    result+=" | input: $(ls "$build/findings/$t" | grep -E '^(crash|leak|timeout|oom|slow-unit)-' | head -1) | log: $log"
  fi
  printf '%-20s %12s %8s %6s %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$result" >"$build/findings/$t/result"
}

rm -rf "$build/corpus.new"
python3 fuzz/make_corpus.py "$build/corpus.new" "$PURELLM_TESTDATA" >/dev/null
mkdir -p "$build/corpus" "$build/dicts"
# Targets run side by side, one per core.
jobs="${PURELLM_FUZZ_JOBS:-$(nproc)}"
running=0
for t in "${targets[@]}"; do
  rm -f "$build/findings/$t/result"
  fuzz_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true
rm -rf "$build/corpus.new"

printf '%-20s %12s %8s %6s %s\n' target executions exec/s cov result
failed=()
for t in "${targets[@]}"; do
  if [ -f "$build/findings/$t/result" ]; then cat "$build/findings/$t/result"; else echo "$t: no result"; fi
  grep -q ' ok$' "$build/findings/$t/result" 2>/dev/null || failed+=("$t")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in: ${failed[*]} (inputs and logs in $build/findings/)" >&2
  exit 1
fi
