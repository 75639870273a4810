#!/bin/sh
# Executes one notebook top to bottom with nbconvert (CTest label "notebooks"). Exit code 77
# (skipped, reason printed) when jupyter or the kernel's NumPy / matplotlib are missing.
set -e
nb="$1"
need="apt-get install jupyter-nbconvert python3-nbclient python3-ipykernel python3-numpy python3-matplotlib"
if ! jupyter nbconvert --version >/dev/null 2>&1; then
  echo "SKIP: jupyter nbconvert is not installed ($need)"
  exit 77
fi
# The Python that runs jupyter (its shebang) runs the notebooks' python3 kernel too.
python=$(sed -n '1s/^#! *//p' "$(command -v jupyter)" | cut -d' ' -f1)
if ! "${python:-python3}" -c "import numpy, matplotlib, ipykernel" >/dev/null 2>&1; then
  echo "SKIP: the Python running jupyter (${python:-python3}) lacks numpy, matplotlib or ipykernel ($need)"
  exit 77
fi
mkdir -p "${PURELLM_NB_OUT:?}"
exec jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=150 \
  --output-dir "$PURELLM_NB_OUT" "$nb"
