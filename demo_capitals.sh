#!/usr/bin/env bash
# Asks gpt2 for the capitals of eight countries (greedy), downloading it first when missing.
set -euo pipefail
cd "$(dirname "$0")"
[ -x build/release/bin/ask ] || scripts/setup.sh release
[ -f models/gpt2/config.json ] || python3 models_download.py gpt2
for country in France Germany Italy Spain Japan Canada Egypt Brazil; do
  build/release/bin/ask -m gpt2 --greedy -n 8 "The capital city of $country is"
done
