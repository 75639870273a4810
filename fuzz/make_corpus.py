#!/usr/bin/env python3
"""Builds the starting corpus of each fuzz target in OUT/<target>/: the committed hand-made
seeds (fuzz/seeds/<target>/) plus inputs cut from the shared test data at run time (test data
is never copied into the repository). Python 3 standard library only.

    fuzz/make_corpus.py OUT_DIR [TESTDATA_DIR]
"""
import hashlib
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEP = "\n__ggml_vocab_test__\n"
# Selector byte of the encode / decode targets: the index in fuzz/real_tokenizers.hpp.
TOKENIZERS = {"gpt2": 0, "llama2": 1, "llama3": 2, "qwen2.5": 3, "stories260K": 4}
TOKVEC = {"gpt-2": "gpt2", "llama-spm": "llama2", "llama-bpe": "llama3", "qwen2": "qwen2.5"}
TOKGOLD = {"gpt2": "gpt2", "llama2": "llama2", "qwen2": "qwen2.5"}


def add(out: Path, data: bytes):
    out.mkdir(parents=True, exist_ok=True)
    (out / hashlib.sha1(data).hexdigest()).write_bytes(data)


def safetensors_headers(testdata: Path, out: Path):
    for f in sorted(testdata.rglob("*.safetensors")):
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            add(out, fh.read(n))


def configs(testdata: Path, out: Path):
    for f in sorted(testdata.rglob("config.json")):
        add(out, f.read_bytes())


def tokenizer_configs(testdata: Path, out: Path):
    for f in sorted(testdata.rglob("tokenizer_config.json")):
        for setting in (0, 1):
            add(out, bytes([setting]) + f.read_bytes())
    for f in sorted(testdata.rglob("added_tokens.json")):
        add(out, bytes([2]) + f.read_bytes())


def encode_texts(testdata: Path, out: Path):
    texts = []
    for f in sorted((testdata / "tokvec").glob("*.inp")):
        texts += f.read_text(encoding="utf-8").split(SEP)
    for f in sorted((testdata / "tokgold").glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.append(json.loads(line)["text"])
    for i, text in enumerate(texts):
        data = text.encode("utf-8", errors="surrogatepass")
        if len(data) <= 1000:
            add(out, bytes([i % (2 * len(TOKENIZERS))]) + data)


def pack_ids(selector: int, ids) -> bytes:
    return bytes([selector]) + b"".join(int(i).to_bytes(3, "little") for i in ids)


def decode_ids(testdata: Path, out: Path):
    for name, tok in TOKVEC.items():
        f = testdata / "tokvec" / f"ggml-vocab-{name}.gguf.out"
        for line in f.read_text().splitlines():
            ids = line.split()
            if ids and len(ids) <= 300:
                add(out, pack_ids(TOKENIZERS[tok], ids))
    for name, tok in TOKGOLD.items():
        for line in (testdata / "tokgold" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
            ids = json.loads(line)["ids"] if line.strip() else []
            if ids and len(ids) <= 300:
                add(out, pack_ids(TOKENIZERS[tok], ids))


def main():
    out = Path(sys.argv[1])
    testdata = Path(sys.argv[2] if len(sys.argv) > 2 else os.environ.get("PURELLM_TESTDATA", HERE.parent.parent / "shared/testdata"))
    if not (testdata / "README.md").exists():
        sys.exit(f"make_corpus.py: no test data at {testdata} (set PURELLM_TESTDATA)")
    for seeds in sorted((HERE / "seeds").iterdir()):
        for f in sorted(seeds.iterdir()):
            add(out / seeds.name, f.read_bytes())
    safetensors_headers(testdata, out / "safetensors_header")
    configs(testdata, out / "model_config")
    add(out / "tokenizer_json", (testdata / "models/stories260K/tokenizer.json").read_bytes())
    tokenizer_configs(testdata, out / "tokenizer_config")
    encode_texts(testdata, out / "tokenizer_encode")
    decode_ids(testdata, out / "tokenizer_decode")
    add(out / "models_json", (HERE.parent / "models.json").read_bytes())
    for d in sorted(out.iterdir()):
        print(f"corpus {d.name}: {len(list(d.iterdir()))} inputs")


if __name__ == "__main__":
    main()
