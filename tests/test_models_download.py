#!/usr/bin/env python3
"""Tests of models_download.py against a fake Hugging Face Hub served on 127.0.0.1.

The fake Hub answers the three endpoints the downloader uses (revision info, paginated tree,
resolve), redirects LFS files to a "CDN" on another host name (localhost), honours Range
requests, and injects faults: a connection cut mid-body, corrupted bytes, a missing file,
a 416 for every Range, a Range that is ignored (200), a 503. Its repos are built at test
time from $PURELLM_TESTDATA (gpt2-tiny fixture + the real GPT-2 tokenizer files).
Each test runs the script as a subprocess. Standard library only.
"""

import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "models_download.py")
TESTDATA = os.environ.get("PURELLM_TESTDATA") or os.path.join(ROOT, "..", "shared", "testdata")
FIXTURE = os.path.join(TESTDATA, "fixtures", "gpt2-tiny")
TOKENIZER = os.path.join(TESTDATA, "tokenizers", "gpt2")

COMMIT = "0123456789abcdef0123456789abcdef01234567"
GOOD_TOKEN = "hf_test_good_token"
EXIT_USAGE, EXIT_NOT_FOUND, EXIT_ACCESS, EXIT_NETWORK, EXIT_CHECKSUM, EXIT_NO_WEIGHTS = 2, 3, 4, 5, 6, 7
TREE_PAGE = 4  # small, so that every tree listing spans several pages


def read(path):
    with open(path, "rb") as f:
        return f.read()


def testdata_available():
    return os.path.isfile(os.path.join(FIXTURE, "model.safetensors")) and \
        os.path.isfile(os.path.join(TOKENIZER, "tokenizer.json"))


def require_testdata():
    if testdata_available():
        return
    message = "test data not found in %s (set PURELLM_TESTDATA)" % TESTDATA
    if os.environ.get("PURELLM_REQUIRE_TESTDATA") == "1":
        raise AssertionError(message)
    raise unittest.SkipTest(message)


def gpt2_tiny_files():
    """A GPT-2 repo as the Hub lays it out: vocab.json/merges.txt are encoder.json/vocab.bpe."""
    return {
        "config.json": read(os.path.join(FIXTURE, "config.json")),
        "generation_config.json": read(os.path.join(FIXTURE, "generation_config.json")),
        "model.safetensors": read(os.path.join(FIXTURE, "model.safetensors")),
        "tokenizer.json": read(os.path.join(TOKENIZER, "tokenizer.json")),
        "tokenizer_config.json": read(os.path.join(TOKENIZER, "tokenizer_config.json")),
        "vocab.json": read(os.path.join(TOKENIZER, "encoder.json")),
        "merges.txt": read(os.path.join(TOKENIZER, "vocab.bpe")),
    }


def split_safetensors(data):
    """Split one safetensors file into two valid shards; returns (shard_a, shard_b, weight_map)."""
    header_len = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + header_len])
    body = data[8 + header_len:]
    names = sorted(k for k in header if k != "__metadata__")
    halves = (names[:len(names) // 2], names[len(names) // 2:])
    shards, weight_map = [], {}
    for index, half in enumerate(halves):
        shard_name = "model-%05d-of-00002.safetensors" % (index + 1)
        new_header, chunks, offset = {"__metadata__": {"format": "pt"}}, [], 0
        for name in half:
            begin, end = header[name]["data_offsets"]
            chunks.append(body[begin:end])
            new_header[name] = dict(header[name], data_offsets=[offset, offset + end - begin])
            offset += end - begin
            weight_map[name] = shard_name
        encoded = json.dumps(new_header).encode()
        encoded += b" " * (-len(encoded) % 8)
        shards.append(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))
    return shards[0], shards[1], weight_map


def is_lfs(name):
    return name.endswith((".safetensors", ".bin", ".msgpack", ".onnx"))


class FakeHub:
    """An HTTP server that behaves like the parts of huggingface.co the downloader uses."""

    def __init__(self):
        self.repos = {}         # repo id -> {"files": {name: bytes}, "gated": bool}
        self.cut_once = {}      # file name -> bytes to send before closing the connection (once)
        self.corrupt = set()    # file names served with flipped bytes
        self.missing = set()    # file names listed by the API but 404 on download
        self.refuse_range = set()   # file names that answer 416 to any Range request
        self.ignore_range = set()   # file names that answer 200 (whole file) to Range requests
        self.fail_once_503 = set()  # request paths that answer 503 the first time
        self.requests = []      # (path with query, {header: value}) of every request
        self.lock = threading.Lock()
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hub.handle(self)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.cdn = "http://localhost:%d" % self.port  # another host name: the token must not go there
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    def add_repo(self, repo, files, gated=False):
        self.repos[repo] = {"files": dict(files), "gated": gated}

    def start(self):
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def requests_to(self, pattern):
        with self.lock:
            return [(path, headers) for path, headers in self.requests if re.search(pattern, path)]

    # -- request handling ---------------------------------------------------------------------

    def handle(self, req):
        with self.lock:
            self.requests.append((req.path, dict(req.headers.items())))
            fail = req.path in self.fail_once_503
            self.fail_once_503.discard(req.path)
        if fail:
            return self.send(req, 503, b"busy", {"Retry-After": "0"})
        parts = urllib.parse.urlsplit(req.path)
        path = urllib.parse.unquote(parts.path)
        api = re.match(r"^/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)$", path)
        resolve = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/([^/]+)$", path)
        cdn = re.match(r"^/cdn/([^/]+/[^/]+)/([^/]+)$", path)
        if api:
            self.api(req, api.group(1), api.group(2), api.group(3), parts.query)
        elif resolve:
            self.resolve(req, *resolve.groups())
        elif cdn:
            self.serve_bytes(req, cdn.group(2), self.repos[cdn.group(1)]["files"][cdn.group(2)])
        else:
            self.send(req, 404, b"no such page")

    def check_repo(self, req, repo, revision):
        """The repo's files, or None after sending the Hub's error answer."""
        if repo not in self.repos:  # the Hub answers 401 for unknown repos (they may be private)
            self.send(req, 401, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"})
            return None
        if revision not in ("main", COMMIT):
            self.send(req, 404, b'{"error":"Invalid rev id"}', {"X-Error-Code": "RevisionNotFound"})
            return None
        return self.repos[repo]["files"]

    def api(self, req, repo, kind, revision, query):
        files = self.check_repo(req, repo, revision)
        if files is None:
            return
        if kind == "revision":
            siblings = [{"rfilename": n} for n in sorted(files)] + [{"rfilename": "onnx/model.onnx"}]
            gated = "manual" if self.repos[repo]["gated"] else False
            return self.send_json(req, {"id": repo, "sha": COMMIT, "siblings": siblings, "gated": gated})
        entries = [{"type": "directory", "oid": "0" * 40, "size": 0, "path": "onnx"}]
        for name in sorted(files):
            data = files[name]
            entry = {"type": "file", "size": len(data), "path": name,
                     "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
            if is_lfs(name):
                entry["oid"] = "f" * 40  # the oid of the LFS pointer, not of the content
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                "pointerSize": 134}
            entries.append(entry)
        cursor = int(urllib.parse.parse_qs(query).get("cursor", ["0"])[0])
        page = entries[cursor:cursor + TREE_PAGE]
        headers = {}
        if cursor + TREE_PAGE < len(entries):
            headers["Link"] = '<%s/api/models/%s/tree/%s?cursor=%d>; rel="next"' % (
                self.url, repo, revision, cursor + TREE_PAGE)
        self.send_json(req, page, headers)

    def resolve(self, req, repo, revision, name):
        files = self.check_repo(req, repo, revision)
        if files is None:
            return
        if self.repos[repo]["gated"]:
            auth = req.headers.get("Authorization")
            if auth is None:
                return self.send(req, 401, b'{"error":"gated"}', {
                    "X-Error-Code": "GatedRepo",
                    "X-Error-Message": "Access to model %s is restricted. You must have access to it "
                                       "and be authenticated to access it. Please log in." % repo})
            if auth != "Bearer " + GOOD_TOKEN:
                return self.send(req, 403, b'{"error":"gated"}', {
                    "X-Error-Code": "GatedRepo",
                    "X-Error-Message": "Access to model %s is restricted and you are not in the "
                                       "authorized list." % repo})
        if name not in files or name in self.missing:
            return self.send(req, 404, b'{"error":"Entry not found"}', {"X-Error-Code": "EntryNotFound"})
        if is_lfs(name):
            return self.send(req, 302, b"", {"Location": "%s/cdn/%s/%s?signed=1" % (self.cdn, repo, name)})
        self.serve_bytes(req, name, files[name])

    def serve_bytes(self, req, name, data):
        if name in self.corrupt:
            data = bytes(b ^ 0x5A for b in data[:64]) + data[64:]
        status, start, headers = 200, 0, {"Accept-Ranges": "bytes"}
        match = re.match(r"^bytes=(\d+)-$", req.headers.get("Range") or "")
        if match and name not in self.ignore_range:
            start = int(match.group(1))
            if name in self.refuse_range or start >= len(data):
                return self.send(req, 416, b"", {"Content-Range": "bytes */%d" % len(data)})
            status = 206
            headers["Content-Range"] = "bytes %d-%d/%d" % (start, len(data) - 1, len(data))
        body = data[start:]
        with self.lock:
            cut = self.cut_once.pop(name, None)
        if cut is None:
            return self.send(req, status, body, headers)
        headers["Content-Length"] = str(len(body))  # announce everything, then hang up early
        self.send(req, status, body[:cut], headers)
        req.wfile.flush()
        req.connection.shutdown(socket.SHUT_RDWR)

    def send_json(self, req, value, headers=None):
        headers = dict(headers or {}, **{"Content-Type": "application/json"})
        self.send(req, 200, json.dumps(value).encode(), headers)

    def send(self, req, status, body, headers=None):
        req.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Length", str(len(body)))
        for key, value in headers.items():
            req.send_header(key, value)
        req.end_headers()
        req.wfile.write(body)


def run_script(args, endpoint, token=None):
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "hf_token")}
    env["HF_ENDPOINT"] = endpoint
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run([sys.executable, SCRIPT] + list(args), env=env, capture_output=True,
                          text=True, timeout=60)


class RegistryTest(unittest.TestCase):
    """models.json and --list need no server and no test data."""

    def setUp(self):
        with open(os.path.join(ROOT, "models.json"), encoding="utf-8") as f:
            self.registry = json.load(f)

    def test_every_entry_has_the_shared_keys_with_the_right_types(self):
        types = {"repo": str, "family": str, "parameters": int, "context": int, "weights_dtype": str,
                 "weights_bytes": int, "chat": bool, "gated": bool, "status": str, "notes": str}
        for alias, entry in self.registry.items():
            for key, kind in types.items():
                self.assertIsInstance(entry.get(key), kind, "%s.%s" % (alias, key))
            self.assertIn(entry["status"], ("supported", "planned"), alias)
            self.assertRegex(entry["repo"], r"^[\w.-]+/[\w.-]+$", alias)
            self.assertGreater(entry["parameters"], 10_000_000, alias)
            self.assertGreater(entry["context"], 0, alias)
            # F32 checkpoints hold >= 4 bytes per parameter, BF16 >= 2 (tied heads are stored once).
            per_param = {"F32": 4, "BF16": 2, "F16": 2}[entry["weights_dtype"]]
            self.assertGreaterEqual(entry["weights_bytes"], per_param * entry["parameters"], alias)

    def test_the_aliases_purellm_documents_are_present(self):
        supported = {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2", "dialogpt-small"}
        for alias in supported:
            self.assertEqual(self.registry[alias]["status"], "supported", alias)
            self.assertEqual(self.registry[alias]["family"], "gpt2", alias)
        for alias in ("tinyllama", "smollm2-135m", "llama-3.2-1b", "mistral-7b", "qwen2.5-0.5b",
                      "falcon-7b", "falcon-40b", "granite-4.0-h-350m", "granite-3.1-1b-a400m"):
            self.assertIn(alias, self.registry)
        self.assertTrue(self.registry["llama-3.2-1b"]["gated"])
        self.assertTrue(self.registry["dialogpt-small"]["chat"])

    def test_list_prints_every_alias_with_params_context_status(self):
        result = run_script(["--list"], "http://127.0.0.1:9")
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        for alias, entry in self.registry.items():
            row = [line for line in lines if line.split()[0] == alias]
            self.assertEqual(len(row), 1, alias)
            self.assertIn(entry["status"], row[0])
            self.assertIn(str(entry["context"]), row[0].split())
            self.assertIn(entry["repo"], row[0])

    def test_unknown_alias_is_a_usage_error(self):
        result = run_script(["no-such-model", "--dest", tempfile.gettempdir()], "http://127.0.0.1:9")
        self.assertEqual(result.returncode, EXIT_USAGE)
        self.assertIn("unknown alias 'no-such-model'", result.stderr)
        self.assertIn("--list", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_server_unreachable_names_the_endpoint(self):
        with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
            probe.bind(("127.0.0.1", 0))
            endpoint = "http://127.0.0.1:%d" % probe.getsockname()[1]
        dest = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, dest)
        result = run_script(["openai-community/gpt2", "--dest", dest, "--retries", "1"], endpoint)
        self.assertEqual(result.returncode, EXIT_NETWORK, result.stderr)
        self.assertIn("cannot reach 127.0.0.1", result.stderr)
        self.assertIn(endpoint, result.stderr)
        self.assertIn("retry 1/1", result.stderr)
        self.assertNotIn("Traceback", result.stderr)


class DownloadTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_testdata()
        cls.gpt2 = gpt2_tiny_files()

    def setUp(self):
        self.hub = FakeHub()
        extras = {"README.md": b"# gpt2\n", "pytorch_model.bin": b"pickle" * 100,
                  "flax_model.msgpack": b"flax" * 100}
        self.hub.add_repo("openai-community/gpt2", dict(self.gpt2, **extras))
        self.hub.add_repo("test/gated", self.gpt2, gated=True)
        self.hub.start()
        self.addCleanup(self.hub.stop)
        self.dest = tempfile.mkdtemp(prefix="purellm-download-test-")
        self.addCleanup(shutil.rmtree, self.dest)

    def download(self, *args, token=None):
        return run_script(list(args) + ["--dest", self.dest], self.hub.url, token)

    def assert_files(self, folder, expected):
        folder = os.path.join(self.dest, folder)
        self.assertEqual(sorted(os.listdir(folder)), sorted(expected))  # also: no .part left
        for name, data in expected.items():
            self.assertEqual(read(os.path.join(folder, name)), data, name)

    # -- success paths ------------------------------------------------------------------------

    def test_repo_id_download_is_byte_identical_and_skips_other_files(self):
        result = self.download("openai-community/gpt2")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assert_files("gpt2", self.gpt2)  # no README, .bin, .msgpack, onnx/
        self.assertEqual(self.hub.requests_to(r"pytorch_model|msgpack|onnx|README"), [])
        self.assertTrue(all("Authorization" not in h for _, h in self.hub.requests))
        self.assertGreater(len(self.hub.requests_to(r"/tree/.*cursor=")), 0)  # paginated tree
        self.assertTrue(all(COMMIT in p for p, _ in self.hub.requests_to(r"/resolve/")))

    def test_second_run_skips_complete_files(self):
        self.assertEqual(self.download("openai-community/gpt2").returncode, 0)
        before = len(self.hub.requests_to(r"/resolve/|/cdn/"))
        result = self.download("openai-community/gpt2")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(len(self.hub.requests_to(r"/resolve/|/cdn/")), before)
        self.assertEqual(result.stderr.count("already complete"), len(self.gpt2))

    def test_stale_final_file_is_downloaded_again(self):
        folder = os.path.join(self.dest, "gpt2")
        os.makedirs(folder)
        with open(os.path.join(folder, "config.json"), "wb") as f:
            f.write(self.gpt2["config.json"].replace(b"gpt2", b"gpt3"))  # same size, other bytes
        result = self.download("openai-community/gpt2")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("config.json: existing file is stale (git blob sha1", result.stderr)
        self.assert_files("gpt2", self.gpt2)

    def test_alias_resolves_through_models_json(self):
        result = self.download("gpt2")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assert_files("gpt2", self.gpt2)
        result = self.download("gpt2", "--name", "my-gpt2")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assert_files("my-gpt2", self.gpt2)
        self.assertEqual(len(self.hub.requests_to(r"^/api/models/openai-community/gpt2/revision/main")), 2)

    def test_config_only_fetches_no_weights(self):
        result = self.download("openai-community/gpt2", "--config-only")
        self.assertEqual(result.returncode, 0, result.stderr)
        expected = {k: v for k, v in self.gpt2.items() if not k.endswith(".safetensors")}
        self.assert_files("gpt2", expected)
        self.assertEqual(self.hub.requests_to(r"safetensors"), [])

    def test_sharded_repo_fetches_the_index_and_only_the_shards_it_names(self):
        shard_a, shard_b, weight_map = split_safetensors(self.gpt2["model.safetensors"])
        index = json.dumps({"metadata": {"total_size": len(shard_a) + len(shard_b)},
                            "weight_map": weight_map}, indent=2).encode()
        files = {k: v for k, v in self.gpt2.items() if k != "model.safetensors"}
        files.update({"model.safetensors.index.json": index, "model-00001-of-00002.safetensors": shard_a,
                      "model-00002-of-00002.safetensors": shard_b})
        self.hub.add_repo("test/sharded", dict(files, **{"consolidated.safetensors": b"x" * 1000}))
        result = self.download("test/sharded")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assert_files("sharded", files)
        self.assertEqual(self.hub.requests_to(r"consolidated"), [])

    def test_index_naming_a_file_that_is_not_in_the_repo_fails(self):
        index = json.dumps({"weight_map": {"wte.weight": "model-00001-of-00009.safetensors"}}).encode()
        files = dict(self.gpt2, **{"model.safetensors.index.json": index})
        self.hub.add_repo("test/bad-index", files)
        result = self.download("test/bad-index")
        self.assertEqual(result.returncode, EXIT_NOT_FOUND, result.stderr)
        self.assertIn("model-00001-of-00009.safetensors", result.stderr)

    # -- interrupted and faulty transfers -----------------------------------------------------

    def test_resume_after_a_cut_connection_sends_range(self):
        weights = self.gpt2["model.safetensors"]
        self.hub.cut_once["model.safetensors"] = 200_000
        first = self.download("openai-community/gpt2", "--retries", "0")
        self.assertEqual(first.returncode, EXIT_NETWORK, first.stderr)
        self.assertIn("connection closed after", first.stderr)
        part = os.path.join(self.dest, "gpt2", "model.safetensors.part")
        self.assertFalse(os.path.exists(os.path.join(self.dest, "gpt2", "model.safetensors")))
        self.assertEqual(read(part), weights[:200_000])

        second = self.download("openai-community/gpt2")
        self.assertEqual(second.returncode, 0, second.stderr)
        self.assert_files("gpt2", self.gpt2)
        ranges = [h.get("Range") for _, h in self.hub.requests_to(r"^/cdn/.*model\.safetensors")]
        self.assertEqual(ranges, [None, "bytes=200000-"])

    def test_cut_connection_is_retried_within_one_run(self):
        self.hub.cut_once["model.safetensors"] = 100_000
        result = self.download("openai-community/gpt2")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("retry 1/5", result.stderr)
        self.assert_files("gpt2", self.gpt2)
        ranges = [h.get("Range") for _, h in self.hub.requests_to(r"^/cdn/.*model\.safetensors")]
        self.assertEqual(ranges, [None, "bytes=100000-"])

    def test_server_that_ignores_range_restarts_the_file(self):
        self.hub.cut_once["model.safetensors"] = 100_000
        self.hub.ignore_range.add("model.safetensors")
        result = self.download("openai-community/gpt2")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assert_files("gpt2", self.gpt2)  # a 200 answer was written from byte 0, not appended

    def test_416_discards_the_part_file_and_starts_over(self):
        folder = os.path.join(self.dest, "gpt2")
        os.makedirs(folder)
        with open(os.path.join(folder, "model.safetensors.part"), "wb") as f:
            f.write(b"\0" * 5000)  # not even a prefix of the real file
        self.hub.refuse_range.add("model.safetensors")
        result = self.download("openai-community/gpt2")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("cannot resume from byte 5000", result.stderr)
        self.assert_files("gpt2", self.gpt2)
        ranges = [h.get("Range") for _, h in self.hub.requests_to(r"^/cdn/.*model\.safetensors")]
        self.assertEqual(ranges, ["bytes=5000-", None])

    def test_checksum_mismatch_deletes_the_download(self):
        self.hub.corrupt.add("model.safetensors")
        result = self.download("openai-community/gpt2")
        self.assertEqual(result.returncode, EXIT_CHECKSUM, result.stderr)
        self.assertIn("model.safetensors is corrupt: sha256 is", result.stderr)
        folder = os.path.join(self.dest, "gpt2")
        self.assertNotIn("model.safetensors", os.listdir(folder))
        self.assertNotIn("model.safetensors.part", os.listdir(folder))

    def test_503_is_retried(self):
        self.hub.fail_once_503.add("/api/models/openai-community/gpt2/revision/main")
        result = self.download("openai-community/gpt2")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("HTTP 503", result.stderr)
        self.assert_files("gpt2", self.gpt2)

    # -- errors the user must understand ------------------------------------------------------

    def test_missing_file_is_a_clear_404(self):
        self.hub.missing.add("model.safetensors")
        result = self.download("openai-community/gpt2")
        self.assertEqual(result.returncode, EXIT_NOT_FOUND, result.stderr)
        self.assertIn("file model.safetensors not found (HTTP 404)", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_unknown_repo_is_not_found(self):
        result = self.download("nobody/nothing")
        self.assertEqual(result.returncode, EXIT_NOT_FOUND, result.stderr)
        self.assertIn("repository nobody/nothing not found at " + self.hub.url, result.stderr)
        self.assertIn("HF_TOKEN", result.stderr)  # it may be private

    def test_unknown_revision_is_not_found(self):
        result = self.download("openai-community/gpt2", "--revision", "v9")
        self.assertEqual(result.returncode, EXIT_NOT_FOUND, result.stderr)
        self.assertIn("revision not found", result.stderr)

    def test_gated_repo_without_token_explains_how_to_get_access(self):
        result = self.download("test/gated")
        self.assertEqual(result.returncode, EXIT_ACCESS, result.stderr)
        self.assertIn("gated repo and HF_TOKEN is not set", result.stderr)
        self.assertIn("%s/test/gated" % self.hub.url, result.stderr)  # where to accept the licence
        self.assertTrue(all("Authorization" not in h for _, h in self.hub.requests))

    def test_gated_repo_with_token_downloads_and_keeps_the_token_off_the_cdn(self):
        result = self.download("test/gated", token=GOOD_TOKEN)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assert_files("gated", self.gpt2)
        hub_requests = self.hub.requests_to(r"^/(api/models/)?test/gated/")
        self.assertTrue(hub_requests)
        for path, headers in hub_requests:
            self.assertEqual(headers.get("Authorization"), "Bearer " + GOOD_TOKEN, path)
        cdn_requests = self.hub.requests_to(r"^/cdn/")
        self.assertTrue(cdn_requests)
        self.assertTrue(all("Authorization" not in h for _, h in cdn_requests))

    def test_gated_repo_with_a_token_that_lacks_access(self):
        result = self.download("test/gated", token="hf_someone_else")
        self.assertEqual(result.returncode, EXIT_ACCESS, result.stderr)
        self.assertIn("has no access to it (HTTP 403", result.stderr)
        self.assertIn("Accept the licence on %s/test/gated" % self.hub.url, result.stderr)

    def test_pytorch_bin_only_repo_explains_the_conversion(self):
        files = {k: v for k, v in self.gpt2.items() if not k.endswith(".safetensors")}
        self.hub.add_repo("test/bin-only", dict(files, **{"pytorch_model.bin": b"pickle" * 100}))
        result = self.download("test/bin-only")
        self.assertEqual(result.returncode, EXIT_NO_WEIGHTS, result.stderr)
        self.assertIn("only PyTorch pickle weights (pytorch_model.bin)", result.stderr)
        self.assertIn("safetensors/convert", result.stderr)
        self.assertIn("safe_serialization=True", result.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.dest, "bin-only")))
        self.assertEqual(self.hub.requests_to(r"/resolve/"), [])
        config_only = self.download("test/bin-only", "--config-only")  # the planner needs no weights
        self.assertEqual(config_only.returncode, 0, config_only.stderr)
        self.assert_files("bin-only", files)


if __name__ == "__main__":
    unittest.main(verbosity=2)
