"""The artifact cache: one folder per artifact, keyed by a hash of the parameters that made it.

`Store.get_or_build(kind, params, build)` returns `data/<kind>/<key>/`. The folder is built in a
temporary sibling and renamed into place only after `build` has returned and the manifest
(parameters, package versions, git commit, creation time, file sizes) has been written, so an
interrupted build never leaves a folder that a later run trusts. A folder whose files no longer
match its manifest is moved aside to `data/<kind>/.corrupt-<key>-<time>` (nothing is deleted)
and rebuilt.

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
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
#: Temporary folders are named per host too: on a store shared by several nodes a pid is local.
_HOST = socket.gethostname().replace("/", "_")
_PACKAGES = ("sae-studies", "torch", "sae-lens", "transformer-lens", "tokenizers", "numpy")


def params_key(kind: str, params: dict[str, Any]) -> str:
    blob = json.dumps({"kind": kind, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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


class Store:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def get(self, kind: str, params: dict[str, Any]) -> Artifact | None:
        """The valid artifact for these parameters, or None. Corrupt folders are moved aside."""
        key = params_key(kind, params)
        path = self.root / kind / key
        if not path.exists():
            return None
        try:
            _verify(path)
        except CorruptArtifact as err:
            aside = path.with_name(f".corrupt-{key}-{time.strftime('%Y%m%d-%H%M%S')}")
            path.rename(aside)
            warnings.warn(f"{err}; moved aside to {aside} and rebuilding", stacklevel=2)
            return None
        return Artifact(kind, key, path)

    def get_or_build(self, kind: str, params: dict[str, Any], build: Callable[[Path], dict[str, Any] | None]) -> Artifact:
        """Return the cached artifact, or call `build(tmp_dir)` to write it and publish it.

        `build` may return a dict of summary values that is stored in the manifest.
        """
        return self.get_or_build_many(kind, [params], lambda _, tmps: [build(tmps[0])])[0]

    def get_or_build_many(
        self,
        kind: str,
        params_list: list[dict[str, Any]],
        build: Callable[[list[dict[str, Any]], list[Path]], list[dict[str, Any] | None]],
    ) -> list[Artifact]:
        """Like get_or_build for several artifacts made by one computation (e.g. one forward
        pass that harvests several hooks): `build(missing_params, tmp_dirs)` is called once, for
        the missing ones only, and each is published when all are complete."""
        found = [self.get(kind, params) for params in params_list]
        missing = [i for i, art in enumerate(found) if art is None]
        if not missing:
            return found  # type: ignore[return-value]
        keys = [params_key(kind, params_list[i]) for i in missing]
        tmps = [self.root / kind / f".tmp-{key}-{_HOST}-{os.getpid()}" for key in keys]
        for key in keys:
            _remove_dead_temporaries(self.root / kind, key)
        try:
            for tmp in tmps:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            summaries = build([params_list[i] for i in missing], tmps)
            for i, key, tmp, summary in zip(missing, keys, tmps, summaries):
                _write_manifest(tmp, kind, key, params_list[i], summary or {})
            for i, key, tmp in zip(missing, keys, tmps):
                found[i] = self._publish(kind, key, tmp, params_list[i])
        except BaseException:  # KeyboardInterrupt too: never leave a half-written folder
            for tmp in tmps:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        return found  # type: ignore[return-value]

    def _publish(self, kind: str, key: str, tmp: Path, params: dict[str, Any]) -> Artifact:
        """Rename `tmp` into place. Renaming a folder onto an existing non-empty one fails, so of
        two workers that built the same key at once (a sweep on a shared store) exactly one
        publishes; the other discards its copy and returns the winner's artifact."""
        try:
            tmp.rename(self.root / kind / key)
        except OSError as err:
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            winner = self.get(kind, params)
            if winner is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return winner
        return Artifact(kind, key, self.root / kind / key)

    def stale_temporaries(self) -> list[Path]:
        """Folders left by builds that were killed hard (never trusted; safe to delete)."""
        return sorted(self.root.glob("*/.tmp-*"))


def _remove_dead_temporaries(folder: Path, key: str) -> None:
    """Delete `.tmp-<key>-<host>-<pid>` folders of builds on this host whose process is gone
    (killed hard). Another host's temporaries are left alone: its pids mean nothing here."""
    for tmp in folder.glob(f".tmp-{key}-*"):
        host, _, pid = tmp.name[len(f".tmp-{key}-") :].rpartition("-")
        if host not in ("", _HOST):
            continue
        try:
            os.kill(int(pid), 0)
        except (ProcessLookupError, ValueError):
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


def _files(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file() and p.name != MANIFEST}


def _write_manifest(path: Path, kind: str, key: str, params: dict[str, Any], summary: dict) -> None:
    manifest = {
        "kind": kind,
        "key": key,
        "params": params,
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
    manifest_path = path / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        expected = manifest["files"]
    except (OSError, ValueError, KeyError) as err:
        raise CorruptArtifact(f"artifact {path} has no readable manifest ({err})") from err
    actual = _files(path)
    if actual != expected:
        missing = sorted(set(expected) - set(actual))
        changed = sorted(f for f in expected if f in actual and actual[f] != expected[f])
        raise CorruptArtifact(f"artifact {path} does not match its manifest (missing {missing}, size changed {changed})")


@lru_cache(maxsize=1)  # a process does not change its packages or commit; manifests are many
def package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
