"""The artifact cache: one folder per artifact, keyed by the parameters and the code that made it.

`Store.get_or_build(kind, params, build, code=modules)` returns `data/<kind>/<key>/`, where the
key hashes the parameters, a version of the builder's code (`code_version`: the source of
`modules`, docstrings and comments left out) and the versions of the numerical libraries, so a
changed builder or library recomputes instead of serving an artifact older code made. The folder
is built in a temporary sibling and renamed into place only after `build` has returned and the
manifest (parameters, code version, package versions, git commit, creation time, and the size
and xxh3-128 content hash of every file) has been written, so an interrupted build never leaves a
folder that a later run trusts.

Every read verifies the files against their hashes (once per process and file version; about
0.2-0.5 s per GB from the page cache), so a damaged file of the same size is caught. A folder that
fails is moved aside to `data/<kind>/.corrupt-<key>-<time>` with a warning and rebuilt; the next
process deletes what was moved aside, and the temporary folders of builds that were killed, with
a notice. Warnings and notices also go to `data/cache.log`, which `make figures` prints.

Upstream artifacts enter a key through their own key (pass `Artifact.key` inside `params`), so a
changed parameter recomputes exactly what depends on it.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import xxhash

from .code_version import code_version

MANIFEST = "manifest.json"
#: Manifests of another format (older releases: sizes only, no hashes) are not trusted.
MANIFEST_FORMAT = 2
LOG = "cache.log"
_PACKAGES = ("sae-studies", "torch", "sae-lens", "transformer-lens", "tokenizers", "numpy")
#: Libraries whose version enters every key that names builder code: they change the numbers.
_KEY_PACKAGES = ("torch", "sae-lens", "transformer-lens", "tokenizers", "numpy")
_CHUNK = 16 * 2**20
_HOST = socket.gethostname().replace("-", "_")
_STARTED = time.time()


def params_key(kind: str, params: dict[str, Any]) -> str:
    blob = json.dumps({"kind": kind, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def keyed_params(params: dict[str, Any], code: Sequence[str]) -> dict[str, Any]:
    """The parameters a key hashes: `params`, plus the code version of the builder `code` and
    the numerical libraries' versions when a builder names its code."""
    if not code:
        return params
    libraries = {name: package_versions()[name] for name in _KEY_PACKAGES}
    return {**params, "_code": code_version(*code), "_libraries": libraries}


def file_hash(path: Path) -> str:
    """xxh3-128 of a file's bytes, read in 16 MiB chunks (large activation files included)."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Artifact:
    kind: str
    key: str
    path: Path

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST).read_text())

    @property
    def params(self) -> dict[str, Any]:
        return self.manifest["params"]


class CorruptArtifact(RuntimeError):
    pass


#: (path, size, mtime_ns) of files verified by this process: a file is hashed once per version.
_verified: set[tuple[str, int, int]] = set()


class Store:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._cleaned = False

    def notice(self, message: str) -> None:
        """A cache warning: shown where the code runs (the notebook) and appended to
        `<root>/cache.log`, which `make figures` prints on the console."""
        warnings.warn(message, stacklevel=3)
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOG, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    def clean(self) -> list[Path]:
        """Delete folders no run will trust, with a notice: `.tmp-*` of builds that cannot finish
        (see `_is_stale_temporary`) and `.corrupt-*` moved aside before this process started
        (their warning was shown then). Runs once per Store, at its first read."""
        self._cleaned = True
        removed = []
        for folder in sorted(self.root.glob("*/.tmp-*")) + sorted(self.root.glob("*/.corrupt-*")):
            stale = _is_stale_temporary(folder) if folder.name.startswith(".tmp-") else folder.stat().st_mtime < _STARTED
            if stale:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        if removed:
            self.notice(
                f"cache: deleted {len(removed)} folder(s) left by killed builds or moved aside as damaged: {[str(p) for p in removed]}"
            )
        return removed

    def get(self, kind: str, params: dict[str, Any], code: Sequence[str] = ()) -> Artifact | None:
        """The valid artifact for these parameters (and builder code), or None. A folder whose
        files do not match their sizes and hashes is moved aside with a warning."""
        if not self._cleaned:
            self.clean()
        key = params_key(kind, keyed_params(params, code))
        path = self.root / kind / key
        if not path.exists():
            return None
        try:
            _verify(path)
        except CorruptArtifact as err:
            aside = path.with_name(f".corrupt-{key}-{time.strftime('%Y%m%d-%H%M%S')}")
            path.rename(aside)
            self.notice(f"{err}; moved aside to {aside} and rebuilding")
            return None
        return Artifact(kind, key, path)

    def get_or_build(
        self, kind: str, params: dict[str, Any], build: Callable[[Path], dict[str, Any] | None], code: Sequence[str] = ()
    ) -> Artifact:
        """Return the cached artifact, or call `build(tmp_dir)` to write it and publish it.

        `build` may return a dict of summary values that is stored in the manifest. `code` names
        the modules (or packages) whose source builds the artifact: their version enters the key.
        """
        return self.get_or_build_many(kind, [params], lambda _, tmps: [build(tmps[0])], code=code)[0]

    def get_or_build_many(
        self,
        kind: str,
        params_list: list[dict[str, Any]],
        build: Callable[[list[dict[str, Any]], list[Path]], list[dict[str, Any] | None]],
        code: Sequence[str] = (),
    ) -> list[Artifact]:
        """Like get_or_build for several artifacts made by one computation (e.g. one forward
        pass that harvests several hooks): `build(missing_params, tmp_dirs)` is called once, for
        the missing ones only, and each is published when all are complete."""
        found = [self.get(kind, params, code) for params in params_list]
        missing = [i for i, art in enumerate(found) if art is None]
        if not missing:
            return found  # type: ignore[return-value]
        keyed = {i: keyed_params(params_list[i], code) for i in missing}
        keys = [params_key(kind, keyed[i]) for i in missing]
        tmps = [self.root / kind / f".tmp-{key}-{_HOST}-{os.getpid()}" for key in keys]
        try:
            for tmp in tmps:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            summaries = build([params_list[i] for i in missing], tmps)
            for i, key, tmp, summary in zip(missing, keys, tmps, summaries):
                _write_manifest(tmp, kind, key, params_list[i], summary or {}, code=keyed[i].get("_code"))
            for i, key, tmp in zip(missing, keys, tmps):
                found[i] = self._publish(kind, key, tmp, params_list[i], code)
        except BaseException:  # KeyboardInterrupt too: never leave a half-written folder
            for tmp in tmps:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        return found  # type: ignore[return-value]

    def _publish(self, kind: str, key: str, tmp: Path, params: dict[str, Any], code: Sequence[str]) -> Artifact:
        """Rename `tmp` into place. Renaming a folder onto an existing non-empty one fails, so of
        two workers that built the same key at once (a sweep on a shared store) exactly one
        publishes; the other discards its copy and returns the winner's artifact."""
        try:
            tmp.rename(self.root / kind / key)
        except OSError as err:
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            winner = self.get(kind, params, code)
            if winner is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return winner
        return Artifact(kind, key, self.root / kind / key)


def _is_stale_temporary(tmp: Path) -> bool:
    """`.tmp-<key>-<host>-<pid>` of a build that cannot finish: on this host, its process is
    gone (killed hard); on another host sharing the store (whose processes cannot be asked),
    older than a day."""
    parts = tmp.name.split("-")
    host, pid = (parts[-2], parts[-1]) if len(parts) >= 4 else (_HOST, parts[-1])
    if host != _HOST:
        return time.time() - tmp.stat().st_mtime > 86_400
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def _files(path: Path) -> dict[str, dict[str, Any]]:
    """Size and content hash of every file of an artifact folder but the manifest."""
    return {
        str(p.relative_to(path)): {"size": p.stat().st_size, "xxh3_128": file_hash(p)}
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def _write_manifest(path: Path, kind: str, key: str, params: dict[str, Any], summary: dict, code: str | None = None) -> None:
    manifest = {
        "format": MANIFEST_FORMAT,
        "kind": kind,
        "key": key,
        "params": params,
        "code_version": code,
        "summary": summary,
        "files": _files(path),
        "versions": dict(package_versions()),
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp = path / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    tmp.rename(path / MANIFEST)


def _verify(path: Path) -> None:
    """Raise CorruptArtifact unless every file listed in the manifest exists with its recorded
    size and content hash and no file was added (each file version is hashed once per process)."""
    manifest_path = path / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        expected = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"manifest format {manifest.get('format')!r}, expected {MANIFEST_FORMAT}")
    except (OSError, ValueError, KeyError) as err:
        raise CorruptArtifact(f"artifact {path} has no readable manifest ({err})") from err
    present = {str(p.relative_to(path)): p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST}
    missing = sorted(set(expected) - set(present))
    added = sorted(set(present) - set(expected))
    changed = []
    for name in sorted(set(expected) & set(present)):
        stat = present[name].stat()
        seen = (str(present[name]), stat.st_size, stat.st_mtime_ns)
        if seen in _verified:
            continue
        if stat.st_size != expected[name]["size"] or file_hash(present[name]) != expected[name]["xxh3_128"]:
            changed.append(name)
        else:
            _verified.add(seen)
    if missing or added or changed:
        raise CorruptArtifact(
            f"artifact {path} does not match its manifest (missing {missing}, added {added}, content changed {changed})"
        )


@lru_cache(maxsize=1)  # a process does not change its packages or commit; manifests are many
def package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _git(*args: str, cwd: Path | None = None) -> str | None:
    """stdout of a git command run in ``cwd`` (default: the package's folder); None where git or the
    checkout is missing."""
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=5, cwd=cwd or Path(__file__).resolve().parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


# from the checkout's top: git resolves plain pathspecs against the folder it runs in (the package's),
# where "src" matched nothing and every run read as clean until 2026-12-07
_PROVENANCE_PATHS = (":(top)src", ":(top)notebooks", ":(top)configs")
UNCOMMITTED = "with uncommitted changes"
"""What a findings file's provenance says after its commit when `git_dirty` (the README summary reads it)."""


@lru_cache(maxsize=4)
def git_dirty(cwd: Path | None = None) -> bool:
    """True when the package's source, notebooks or profiles differ from the commit (findings say so)."""
    return bool(_git("status", "--porcelain", "--", *_PROVENANCE_PATHS, cwd=cwd))


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    return _git("rev-parse", "HEAD") or None
