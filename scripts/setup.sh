#!/usr/bin/env bash
# Idempotent setup: install the Debian packages purellm needs (when missing), then configure
# and build one CMake preset (default: release).
#   scripts/setup.sh [preset]        presets: release, debug, tsan, native, cuda
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-release}"

packages=(cmake g++ make pkg-config libxsimd-dev xtensor-dev nlohmann-json3-dev libgtest-dev
          libbenchmark-dev libpcre2-dev libutf8proc-dev libomp-dev python3)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  else
    echo "Missing Debian packages. Install them with:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" -j "$(nproc)"
