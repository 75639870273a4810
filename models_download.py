#!/usr/bin/env python3
"""Download a Hugging Face model for purellm: config, tokenizer and safetensors weights.

  python3 models_download.py gpt2                        # an alias from models.json
  python3 models_download.py openai-community/gpt2       # any Hub repo id
  python3 models_download.py --list                      # the aliases

Files land in <dest>/<alias or repo name>/ (default dest: models/ next to this script).
Python 3 standard library only. How it talks to the Hub:
  GET {endpoint}/api/models/{repo}/revision/{rev}  -> commit sha + "siblings" (the file list)
  GET {endpoint}/api/models/{repo}/tree/{sha}      -> size of each file, lfs.oid = sha256 of
                                                      LFS files, oid = git blob sha1 of others
  GET {endpoint}/{repo}/resolve/{sha}/{file}       -> the bytes (LFS files redirect to a CDN)
Every file is pinned to the commit the revision pointed at when the download started.
"""

import argparse
import hashlib
import http.client
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

EXIT_OK = 0
EXIT_ERROR = 1          # anything else: unexpected HTTP status, disk error, bad models.json
EXIT_USAGE = 2          # bad arguments or unknown alias
EXIT_NOT_FOUND = 3      # repo, revision or file not found (404)
EXIT_ACCESS = 4         # gated or private repo: token missing, rejected or without access
EXIT_NETWORK = 5        # server unreachable or connection kept failing after the retries
EXIT_CHECKSUM = 6       # downloaded bytes do not match the Hub's size / sha256
EXIT_NO_WEIGHTS = 7     # repo has no config.json or no safetensors weights (e.g. only .bin)

EXIT_CODES_HELP = """exit codes:
  0  success (files already complete count as success)
  1  other error (unexpected HTTP status, disk error, bad models.json)
  2  bad arguments or unknown alias
  3  repo, revision or file not found
  4  access denied: gated/private repo and HF_TOKEN missing, invalid or without access
  5  network: server unreachable, or transfers kept failing after --retries attempts
  6  checksum: downloaded file does not match the Hub's size or sha256 (it is deleted)
  7  unusable repo: no config.json, or no safetensors weights (e.g. pytorch_model.bin only)

environment:
  HF_TOKEN     access token (https://huggingface.co/settings/tokens), needed for gated repos
  HF_ENDPOINT  Hub address, to use a mirror (default https://huggingface.co)
"""

DEFAULT_ENDPOINT = "https://huggingface.co"
CONFIG_FILES = ["config.json", "generation_config.json"]
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json",
                   "chat_template.jinja", "chat_template.json"]
SHARD_INDEX = "model.safetensors.index.json"
CHUNK = 1 << 20
MAX_REDIRECTS = 10
USER_AGENT = "purellm-models-download/1.0"


class DownloadError(Exception):
    """A failure to report to the user in one message, with the exit code that names it."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


class TransientError(Exception):
    """A failure worth retrying: connection refused/reset/cut, timeout, HTTP 429 or 5xx."""

    def __init__(self, message, retry_after=None):
        super().__init__(message)
        self.retry_after = retry_after


class RemoteFile:
    """One file of the repo as the tree API describes it (size/hashes None when unknown)."""

    def __init__(self, path, size=None, sha256=None, git_sha1=None):
        self.path = path
        self.size = size
        self.sha256 = sha256          # LFS files: sha256 of the content
        self.git_sha1 = git_sha1      # small files kept in git: sha1 of "blob <size>\0" + content


# ---------------------------------------------------------------------------------------------
# HTTP


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are followed by Hub.open, which decides whether the token may go along."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class Hub:
    """The Hub API for one repo: JSON calls and file downloads with bounded retries."""

    def __init__(self, endpoint, repo, token, retries, timeout=30.0):
        self.endpoint = endpoint
        self.repo = repo
        self.token = token
        self.retries = retries
        self.timeout = timeout
        self.opener = urllib.request.build_opener(_NoRedirect())

    def open(self, url, headers=None, what="", allow_416=False):
        """GET url and return the response (2xx, or 416 when allow_416).

        Raises DownloadError for a final answer (404, 401, ...) and TransientError for
        a failure that a retry may fix. The token is only sent to the endpoint's own host,
        never to the CDN a file redirects to.
        """
        origin = urllib.parse.urlsplit(self.endpoint).netloc
        for _ in range(MAX_REDIRECTS):
            request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
            for key, value in (headers or {}).items():
                request.add_header(key, value)
            if self.token and urllib.parse.urlsplit(url).netloc == origin:
                request.add_header("Authorization", "Bearer " + self.token)
            try:
                return self.opener.open(request, timeout=self.timeout)
            except urllib.error.HTTPError as error:
                if error.code in (301, 302, 303, 307, 308) and error.headers.get("Location"):
                    url = urllib.parse.urljoin(url, error.headers["Location"])
                    error.close()
                    continue
                if error.code == 416 and allow_416:
                    return error
                raise self._http_error(error, url, what)
            except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
                reason = getattr(error, "reason", None) or error
                host = urllib.parse.urlsplit(url).netloc
                raise TransientError("cannot reach %s (%s)" % (host, reason))
        raise DownloadError("too many redirects for %s" % url, EXIT_ERROR)

    def retrying(self, action, what):
        """Run action() and retry TransientError with exponential backoff (bounded)."""
        attempt = 0
        while True:
            try:
                return action()
            except TransientError as error:
                attempt += 1
                if attempt > self.retries:
                    raise DownloadError(
                        "could not get %s: %s; gave up after %d attempt(s). Check the network "
                        "connection or HF_ENDPOINT (now %s); run the same command again to resume."
                        % (what, error, attempt, self.endpoint), EXIT_NETWORK)
                delay = error.retry_after if error.retry_after else min(30.0, 0.5 * 2 ** (attempt - 1))
                delay = min(delay, 60.0)
                log("%s: %s; retry %d/%d in %.1f s" % (what, error, attempt, self.retries, delay))
                time.sleep(delay)

    def get_json(self, url, what):
        """GET a JSON document; returns (value, response headers)."""
        def fetch():
            with self.open(url, what=what) as response:
                try:
                    return json.loads(read_all(response).decode("utf-8")), response.headers
                except ValueError:
                    raise DownloadError("%s: the server did not answer JSON: %s" % (what, url),
                                        EXIT_ERROR)
        return self.retrying(fetch, what)

    def model_info(self, revision):
        url = "%s/api/models/%s/revision/%s" % (self.endpoint, self.repo, quote(revision, safe=""))
        info, _ = self.get_json(url, "repository %s" % self.repo)
        if not isinstance(info, dict) or not isinstance(info.get("siblings"), list):
            raise DownloadError("unexpected answer from %s (no file list)" % url, EXIT_ERROR)
        return info

    def root_files(self, commit):
        """{path: RemoteFile} for the files at the top of the repo (the tree is paginated)."""
        url = "%s/api/models/%s/tree/%s" % (self.endpoint, self.repo, quote(commit, safe=""))
        files = {}
        while url:
            entries, headers = self.get_json(url, "file list of %s" % self.repo)
            if not isinstance(entries, list):
                raise DownloadError("unexpected answer from %s (not a file list)" % url, EXIT_ERROR)
            for entry in entries:
                if isinstance(entry, dict) and entry.get("type") == "file" and "path" in entry:
                    lfs = entry.get("lfs") or {}
                    files[entry["path"]] = RemoteFile(
                        entry["path"], entry.get("size"), lfs.get("oid") or lfs.get("sha256"),
                        None if lfs else entry.get("oid"))
            url = next_page(headers.get("Link"), url)
        return files

    def file_url(self, commit, path):
        return "%s/%s/resolve/%s/%s" % (self.endpoint, self.repo, quote(commit, safe=""), quote(path))

    def _http_error(self, error, url, what):
        code = error.code
        error_code = error.headers.get("X-Error-Code", "")
        server_message = error.headers.get("X-Error-Message") or error_body_message(error)
        error.close()
        if code == 429 or code >= 500:
            return TransientError("HTTP %d from %s" % (code, urllib.parse.urlsplit(url).netloc),
                                  retry_after=parse_retry_after(error.headers.get("Retry-After")))
        page = "%s/%s" % (self.endpoint, self.repo)
        if error_code == "GatedRepo" or (code in (401, 403) and "gated" in server_message.lower()):
            if not self.token:
                return DownloadError(
                    "%s is a gated repo and HF_TOKEN is not set. Log in at %s, accept the licence "
                    "on %s, create a read token at %s/settings/tokens and run again with "
                    "HF_TOKEN=<token>." % (self.repo, self.endpoint, page, self.endpoint), EXIT_ACCESS)
            return DownloadError(
                "%s is a gated repo and the account of your HF_TOKEN has no access to it (HTTP %d: "
                "%s). Accept the licence on %s with that account (approval may take a while), then "
                "run again." % (self.repo, code, server_message or "access denied", page), EXIT_ACCESS)
        if error_code == "RepoNotFound":
            hint = "" if self.token else " If it is private, set HF_TOKEN to a token that can read it."
            return DownloadError("repository %s not found at %s (check the spelling, or --list for "
                                 "aliases).%s" % (self.repo, self.endpoint, hint), EXIT_NOT_FOUND)
        if error_code == "RevisionNotFound":
            return DownloadError("revision not found in %s: %s" % (self.repo, url), EXIT_NOT_FOUND)
        if code == 404:
            return DownloadError("%s not found (HTTP 404): %s" % (what or "repo or file", url),
                                 EXIT_NOT_FOUND)
        if code == 401:
            if self.token:
                return DownloadError("HF_TOKEN was rejected by %s (HTTP 401: %s): the token is invalid "
                                     "or expired." % (self.endpoint, server_message), EXIT_ACCESS)
            return DownloadError("%s needs authentication (HTTP 401): it is private or gated. Set "
                                 "HF_TOKEN to a token that can read it." % self.repo, EXIT_ACCESS)
        if code == 403:
            return DownloadError("access to %s denied (HTTP 403: %s). Check that HF_TOKEN has read "
                                 "access to %s." % (url, server_message, page), EXIT_ACCESS)
        return DownloadError("HTTP %d for %s: %s" % (code, url, server_message), EXIT_ERROR)


def quote(text, safe="/"):
    return urllib.parse.quote(text, safe=safe)


def read_all(response):
    try:
        return response.read()
    except (OSError, http.client.HTTPException) as error:
        raise TransientError("connection lost while reading (%s)" % error)


def error_body_message(error):
    """The Hub puts {"error": "..."} in error bodies; return it or a short text."""
    try:
        body = error.read(4096).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return ""
    try:
        message = json.loads(body).get("error", "")
        return message if isinstance(message, str) else json.dumps(message)
    except (ValueError, AttributeError):
        return body.strip()[:200] if "<html" not in body.lower() else ""


def parse_retry_after(value):
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None


def next_page(link_header, current_url):
    """The URL of rel="next" in a Link header, or None."""
    match = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', link_header or "")
    return urllib.parse.urljoin(current_url, match.group(1)) if match else None


# ---------------------------------------------------------------------------------------------
# Progress on stderr


def log(message):
    print(message, file=sys.stderr, flush=True)


def human_bytes(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1000.0
    return ""


class Progress:
    """A bar redrawn in place on a terminal; plain lines (every 10%) when stderr is a file."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self.received = 0  # bytes that came over the network, all files together

    def start(self, name, done, total):
        self.name, self.total, self.first, self.done = name, total, done, done
        self.started = self.last_draw = time.monotonic()
        self.last_decile = int(10 * done // total) if total else -1  # the start line says as much
        if not self.tty:
            self.stream.write("%s: %s%s\n" % (name, human_bytes(total) if total else "size unknown",
                                              ", resuming at %s" % human_bytes(done) if done else ""))
        self.update(done)

    def update(self, done, final=False):
        self.received += done - self.done
        self.done = done
        now = time.monotonic()
        speed = (done - self.first) / max(now - self.started, 1e-6) / 1e6
        percent = 100.0 * done / self.total if self.total else 0.0
        if self.tty:
            if not final and now - self.last_draw < 0.1:
                return
            self.last_draw = now
            filled = int(percent / 5) if self.total else 0
            self.stream.write("\r%-32.32s [%-20s] %5.1f%%  %s / %s  %.1f MB/s\033[K" % (
                self.name, "#" * filled, percent, human_bytes(done),
                human_bytes(self.total) if self.total else "?", speed))
            if final:
                self.stream.write("\n")
        elif self.total and self.total >= 10_000_000:
            decile = int(percent // 10)
            if decile > self.last_decile and not final:
                self.last_decile = decile
                self.stream.write("  %s %3d%%  %s / %s  %.1f MB/s\n" % (
                    self.name, 10 * decile, human_bytes(done), human_bytes(self.total), speed))
        self.stream.flush()

    def finish(self, done):
        self.update(done, final=True)


# ---------------------------------------------------------------------------------------------
# Files


def file_problem(path, remote):
    """None when the file at path matches the Hub's size and hash, else what is wrong."""
    size = os.path.getsize(path)
    if remote.size is not None and size != remote.size:
        return "size is %d bytes, the Hub says %d" % (size, remote.size)
    if remote.sha256:
        digest = hash_file(path, hashlib.sha256())
        if digest != remote.sha256:
            return "sha256 is %s, the Hub says %s" % (digest, remote.sha256)
    elif remote.git_sha1:
        digest = hash_file(path, hashlib.sha1(b"blob %d\0" % size))
        if digest != remote.git_sha1:
            return "git blob sha1 is %s, the Hub says %s" % (digest, remote.git_sha1)
    return None


def hash_file(path, hasher):
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            hasher.update(block)
    return hasher.hexdigest()


def fetch_to_part(hub, url, part, remote, progress):
    """Append the missing bytes of url to part (HTTP Range resume); restarts when it must."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    if remote.size is not None and have > remote.size:
        os.remove(part)  # longer than the real file: cannot be a prefix of it
        have = 0
    if remote.size is not None and have == remote.size and have > 0:
        return  # a previous run got every byte; the caller verifies them
    headers = {"Range": "bytes=%d-" % have} if have else {}
    response = hub.open(url, headers, what="file %s" % remote.path, allow_416=True)
    with response:
        status = response.status
        start = content_range_start(response.headers.get("Content-Range"))
        if status == 416 or (status == 206 and start != have):
            if not have:
                raise DownloadError("HTTP %d for %s without a Range request" % (status, url),
                                    EXIT_ERROR)
            # The server cannot continue our .part: start again from byte 0, without Range.
            log("%s: the server cannot resume from byte %d; starting over" % (remote.path, have))
            os.remove(part)
            return fetch_to_part(hub, url, part, remote, progress)
        if status != 206:
            have = 0  # 200: the server sent the whole file
        length = response.headers.get("Content-Length")
        expected = have + int(length) if length and length.isdigit() else remote.size
        progress.start(remote.path, have, expected)
        with open(part, "ab" if have else "wb") as out:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as error:
                    raise TransientError("connection lost after %s (%s)" % (human_bytes(have), error))
                if not chunk:
                    break
                out.write(chunk)
                have += len(chunk)
                progress.update(have)
        progress.finish(have)
        if expected is not None and have < expected:
            raise TransientError("connection closed after %s of %s" % (human_bytes(have),
                                                                      human_bytes(expected)))


def content_range_start(value):
    match = re.match(r"bytes\s+(\d+)-", value or "")
    return int(match.group(1)) if match else None


def download_file(hub, commit, remote, folder, progress):
    """Make folder/remote.path a verified copy of the remote file."""
    final = os.path.join(folder, remote.path)
    part = final + ".part"
    if os.path.exists(final):
        if remote.size is not None and remote.size >= 100_000_000:
            log("%s: checking the existing file (%s)" % (remote.path, human_bytes(remote.size)))
        problem = file_problem(final, remote)
        if problem is None:
            log("%s: already complete" % remote.path)
            return
        log("%s: existing file is stale (%s); downloading again" % (remote.path, problem))
    url = hub.file_url(commit, remote.path)
    hub.retrying(lambda: fetch_to_part(hub, url, part, remote, progress), "file %s" % remote.path)
    problem = file_problem(part, remote)
    if problem is not None:
        os.remove(part)
        raise DownloadError(
            "%s is corrupt: %s. The bad download was deleted; run again to retry (if it keeps "
            "failing, the server or mirror at %s serves bad data)." % (remote.path, problem,
                                                                       hub.endpoint), EXIT_CHECKSUM)
    os.replace(part, final)  # atomic: the final name only ever holds a verified file


# ---------------------------------------------------------------------------------------------
# What to download


def choose_files(names, repo, config_only):
    """Names (top-level files) to fetch before any shard index is read."""
    if "config.json" not in names:
        raise DownloadError("%s has no config.json at its top level: it is not a transformers "
                            "model repo that purellm can load." % repo, EXIT_NO_WEIGHTS)
    wanted = [n for n in CONFIG_FILES + TOKENIZER_FILES if n in names]
    if config_only:
        return wanted
    if SHARD_INDEX in names:
        return wanted + [SHARD_INDEX]  # the shards it names follow once it is on disk
    weights = sorted(n for n in names if n.endswith(".safetensors"))
    if "model.safetensors" in weights:
        weights = ["model.safetensors"]
    if weights:
        return wanted + weights
    bins = sorted(n for n in names if n.endswith(".bin") and n.startswith("pytorch_model"))
    if bins:
        raise DownloadError(
            "%s has only PyTorch pickle weights (%s), and purellm reads safetensors only. Convert "
            "them: open https://huggingface.co/spaces/safetensors/convert, which opens a pull "
            "request adding model.safetensors to the repo; download it with --revision refs/pr/<N>. "
            "Or convert locally with transformers: "
            "AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(OUT, safe_serialization=True)."
            % (repo, ", ".join(bins)), EXIT_NO_WEIGHTS)
    raise DownloadError("%s has no *.safetensors weights; purellm needs safetensors." % repo,
                        EXIT_NO_WEIGHTS)


def shards_from_index(path, names, repo):
    """The shard files a model.safetensors.index.json names, each checked to be in the repo."""
    try:
        with open(path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DownloadError("%s: %s is not a valid shard index (%s)" % (repo, SHARD_INDEX, error),
                            EXIT_ERROR)
    for shard in shards:
        if not isinstance(shard, str) or not is_plain_name(shard) or shard not in names:
            raise DownloadError("%s: %s names %r, which is not a file of the repo" % (
                repo, SHARD_INDEX, shard), EXIT_NOT_FOUND)
    return shards


def is_plain_name(name):
    """A file name that cannot escape the model folder."""
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


# ---------------------------------------------------------------------------------------------
# models.json and the command line


def registry_path():
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "models.json")


def load_registry():
    path = registry_path()
    try:
        with open(path, encoding="utf-8") as f:
            registry = json.load(f)
    except OSError as error:
        raise DownloadError("cannot read the alias registry %s: %s" % (path, error), EXIT_ERROR)
    except ValueError as error:
        raise DownloadError("%s is not valid JSON: %s" % (path, error), EXIT_ERROR)
    if not isinstance(registry, dict) or not all(isinstance(e, dict) and "repo" in e
                                                 for e in registry.values()):
        raise DownloadError("%s: every alias needs an object with a \"repo\" key" % path, EXIT_ERROR)
    return registry


def human_count(n):
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return "%.1f%s" % (n / scale, suffix)
    return str(n)


def print_list(registry):
    print("%-22s %8s %8s %9s  %-9s  %s" % ("alias", "params", "context", "weights", "status", "repo"))
    for alias, entry in registry.items():
        print("%-22s %8s %8s %9s  %-9s  %s%s" % (
            alias, human_count(entry.get("parameters", 0)), entry.get("context", "?"),
            human_bytes(entry.get("weights_bytes", 0)), entry.get("status", "?"), entry["repo"],
            "  (gated: needs HF_TOKEN)" if entry.get("gated") else ""))


def resolve_target(model, registry, name):
    """(repo id, folder name, registry entry or None) for an alias or a repo id."""
    if "/" in model:
        repo, entry = model.strip("/"), None
        if not re.match(r"^[\w.-]+/[\w.-]+$", repo):
            raise DownloadError("'%s' is not a Hub repo id (owner/name)" % model, EXIT_USAGE)
        default_name = repo.split("/")[-1]
    elif model in registry:
        repo, entry, default_name = registry[model]["repo"], registry[model], model
    else:
        raise DownloadError("unknown alias '%s': use an HF repo id (owner/name) or one of: %s "
                            "(details: --list)" % (model, ", ".join(registry)), EXIT_USAGE)
    folder = name or default_name
    if not is_plain_name(folder):
        raise DownloadError("--name must be a plain folder name, got '%s'" % folder, EXIT_USAGE)
    return repo, folder, entry


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Download a Hugging Face model (config, tokenizer, safetensors weights) "
                    "into <dest>/<name>/ for purellm.",
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="alias from models.json (see --list) or HF repo id "
                                                 "(owner/name)")
    parser.add_argument("--list", action="store_true", help="print the aliases and exit")
    parser.add_argument("--name", help="folder name under --dest (default: the alias or repo name)")
    parser.add_argument("--dest", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                       "models"),
                        help="parent folder (default: models/ next to this script)")
    parser.add_argument("--revision", default="main", help="branch, tag or commit (default: main)")
    parser.add_argument("--config-only", action="store_true",
                        help="only config.json, generation_config.json and tokenizer files")
    parser.add_argument("--retries", type=int, default=5,
                        help="retries per request on network errors, 429 and 5xx (default: 5)")
    args = parser.parse_args(argv)
    if not args.list and not args.model:
        parser.error("give a model alias or repo id, or --list")
    if args.retries < 0:
        parser.error("--retries must be >= 0")
    return args


def download(args, registry):
    repo, folder_name, entry = resolve_target(args.model, registry, args.name)
    endpoint = (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    token = os.environ.get("HF_TOKEN", "").strip() or None
    if entry and entry.get("status") != "supported":
        log("note: purellm cannot run the %s family yet (status: %s); downloading anyway"
            % (entry.get("family", "?"), entry.get("status", "?")))
    if entry and entry.get("gated") and not token:
        log("note: %s is gated; if the download is refused, accept its licence on %s/%s and set "
            "HF_TOKEN" % (repo, endpoint, repo))
    hub = Hub(endpoint, repo, token, args.retries)

    info = hub.model_info(args.revision)
    commit = info.get("sha") or args.revision
    names = {s.get("rfilename") for s in info["siblings"] if isinstance(s, dict)}
    names = {n for n in names if isinstance(n, str) and is_plain_name(n)}  # top level only
    wanted = choose_files(names, repo, args.config_only)
    try:
        remote = hub.root_files(commit)
    except DownloadError as error:
        if error.exit_code != EXIT_NOT_FOUND:
            raise
        log("warning: %s; sizes and checksums cannot be checked" % error)  # a mirror without it
        remote = {}
    log("%s @ %s -> %s" % (repo, commit[:12], os.path.join(args.dest, folder_name)))

    folder = os.path.join(args.dest, folder_name)
    os.makedirs(folder, exist_ok=True)
    progress = Progress()
    done = []
    queue = list(wanted)
    while queue:
        name = queue.pop(0)
        download_file(hub, commit, remote.get(name) or RemoteFile(name), folder, progress)
        done.append(name)
        if name == SHARD_INDEX:
            queue += shards_from_index(os.path.join(folder, name), names, repo)
    total = sum(os.path.getsize(os.path.join(folder, n)) for n in done)
    log("done: %d files, %s in %s (%s downloaded now)" % (len(done), human_bytes(total), folder,
                                                          human_bytes(progress.received)))
    return EXIT_OK


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        registry = load_registry() if (args.list or "/" not in args.model) else {}
        if args.list:
            print_list(registry)
            return EXIT_OK
        return download(args, registry)
    except DownloadError as error:
        log("error: %s" % error)
        return error.exit_code
    except OSError as error:
        log("error: %s" % error)
        return EXIT_ERROR
    except KeyboardInterrupt:
        log("interrupted; run the same command again to resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
