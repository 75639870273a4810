"""What every notebook here shares: where things are, running purellm's programs, reading
safetensors files with NumPy alone, and saving the notebook's figure.

Paths come from the environment when set (CTest sets them), else from the repository layout:
  PURELLM_BIN       the built programs        (default: ../build/release/bin)
  PURELLM_TESTDATA  the shared test data      (default: ../../shared/testdata)
  PURELLM_NB_OUT    where figures are written (default: this folder)
"""
import json
import os
import struct
import subprocess

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BIN = os.environ.get("PURELLM_BIN") or os.path.join(REPO, "build", "release", "bin")
TESTDATA = os.environ.get("PURELLM_TESTDATA") or os.path.join(REPO, "..", "shared", "testdata")
OUT = os.environ.get("PURELLM_NB_OUT") or HERE


def data(*parts):
    """A path in the shared test data."""
    return os.path.join(TESTDATA, *parts)


def run(program, *args, env=None):
    """Runs a purellm program; returns the CompletedProcess (stdout, stderr as text)."""
    cmd = [os.path.join(BIN, program)] + [str(a) for a in args]
    p = subprocess.run(cmd, capture_output=True, text=True, env=None if env is None else {**os.environ, **env})
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr}")
    return p


def inspect_json(model_dir, *args):
    """`inspect -m DIR --json ...` as a dict (description, tensors, memory plan)."""
    return json.loads(run("inspect", "-m", model_dir, "--json", *args).stdout)


# safetensors: 8-byte little-endian header length, JSON header, then the raw tensors.
_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    """All tensors of a safetensors file as NumPy arrays (BF16 widened to float32), and the
    header's __metadata__."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, t in header.items():
        begin, end = t["data_offsets"]
        a = np.frombuffer(raw[8 + n + begin:8 + n + end], dtype=_DTYPES[t["dtype"]]).reshape(t["shape"])
        if t["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = a
    return tensors, metadata


def save_figure(fig, name):
    """Writes the notebook's figure as <name>.png (in PURELLM_NB_OUT, else beside the notebook)."""
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name + ".png")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    print("saved", os.path.relpath(path))
    return path
