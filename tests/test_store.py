import json
import os
import sys
import time

import pytest
import xxhash

from sae_studies import store as store_module
from sae_studies.code_version import code_version
from sae_studies.store import Store, file_hash, params_key


def _writer(calls):
    def build(tmp):
        calls.append(tmp)
        (tmp / "x.txt").write_text("hello")
        return {"n": 1}

    return build


def test_build_once_then_reuse(tmp_path):
    store, calls = Store(tmp_path), []
    a = store.get_or_build("thing", {"p": 1}, _writer(calls))
    b = store.get_or_build("thing", {"p": 1}, _writer(calls))
    assert len(calls) == 1 and a.path == b.path and (a.path / "x.txt").read_text() == "hello"
    manifest = a.manifest
    assert manifest["params"] == {"p": 1} and manifest["summary"] == {"n": 1}
    assert manifest["files"] == {"x.txt": {"size": 5, "xxh3_128": xxhash.xxh3_128(b"hello").hexdigest()}}
    assert "torch" in manifest["versions"]


def test_changed_parameter_is_a_new_artifact(tmp_path):
    assert params_key("k", {"p": 1}) != params_key("k", {"p": 2})
    assert params_key("k", {"a": 1, "b": 2}) == params_key("k", {"b": 2, "a": 1})


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_interrupted_build_leaves_nothing_trusted(tmp_path, error):
    store = Store(tmp_path)

    def build(tmp):
        (tmp / "half.bin").write_bytes(b"x" * 10)
        raise error()

    with pytest.raises(error):
        store.get_or_build("thing", {"p": 1}, build)
    assert store.get("thing", {"p": 1}) is None
    assert list((tmp_path / "thing").iterdir()) == []


def test_corrupt_entry_is_moved_aside_and_rebuilt(tmp_path):
    store, calls = Store(tmp_path), []
    art = store.get_or_build("thing", {"p": 1}, _writer(calls))
    (art.path / "x.txt").write_text("truncated?")  # size no longer matches the manifest
    with pytest.warns(UserWarning, match="does not match its manifest"):
        again = Store(tmp_path).get_or_build("thing", {"p": 1}, _writer(calls))
    assert len(calls) == 2 and (again.path / "x.txt").read_text() == "hello"
    aside = [p for p in (tmp_path / "thing").iterdir() if p.name.startswith(".corrupt-")]
    assert len(aside) == 1 and (aside[0] / "x.txt").read_text() == "truncated?"  # nothing lost


def test_unreadable_manifest_counts_as_corrupt(tmp_path):
    store = Store(tmp_path)
    art = store.get_or_build("thing", {"p": 1}, _writer([]))
    (art.path / "manifest.json").write_text("{not json")
    with pytest.warns(UserWarning):
        assert store.get("thing", {"p": 1}) is None


def test_build_many_builds_only_the_missing_ones(tmp_path):
    store = Store(tmp_path)
    store.get_or_build("h", {"i": 0}, _writer([]))
    seen = []

    def build(missing, tmps):
        seen.extend(p["i"] for p in missing)
        for tmp in tmps:
            (tmp / "f").write_text("y")
        return [None] * len(tmps)

    arts = store.get_or_build_many("h", [{"i": 0}, {"i": 1}, {"i": 2}], build)
    assert seen == [1, 2] and all(a.path.exists() for a in arts)
    assert json.loads((arts[2].path / "manifest.json").read_text())["params"] == {"i": 2}


def test_temporaries_of_dead_builds_are_removed(tmp_path):
    store = Store(tmp_path)
    key = params_key("thing", {"p": 1})
    dead = tmp_path / "thing" / f".tmp-{key}-999999999"
    dead.mkdir(parents=True)
    store.get_or_build("thing", {"p": 1}, _writer([]))
    assert not dead.exists()


def test_same_size_damage_is_detected_and_logged(tmp_path):
    """Zeroing part of a file keeps its size; the content hash catches it (a new process reads it)."""
    calls = []
    art = Store(tmp_path).get_or_build("acts", {"p": 1}, _writer(calls))
    data = art.path / "x.txt"
    data.write_bytes(b"\0\0llo")  # same size, other bytes
    assert data.stat().st_size == 5
    store_module._verified.clear()  # as in a fresh process
    with pytest.warns(UserWarning, match=r"content changed \['x.txt'\]"):
        assert Store(tmp_path).get("acts", {"p": 1}) is None
    assert "content changed" in (tmp_path / "cache.log").read_text()


def test_file_hash_reads_in_chunks(tmp_path, monkeypatch):
    big = tmp_path / "big.bin"
    payload = os.urandom(3000)
    big.write_bytes(payload)
    monkeypatch.setattr(store_module, "_CHUNK", 1024)
    assert file_hash(big) == xxhash.xxh3_128(payload).hexdigest()


def test_a_changed_builder_recomputes(tmp_path, monkeypatch):
    """The builder's code is part of the key: editing what it does rebuilds, a docstring (of a module,
    function or attribute) does not."""
    pkg = tmp_path / "src"
    pkg.mkdir()
    module = pkg / "toy_builder.py"
    module.write_text('"""v1"""\ndef scale():\n    return 2\n\nclass Cfg:\n    k: int = 32\n    """k."""\n')
    monkeypatch.syspath_prepend(str(pkg))
    store, calls = Store(tmp_path / "data"), []
    store.get_or_build("thing", {"p": 1}, _writer(calls), code=("toy_builder",))
    module.write_text(
        '"""v1, reworded docstring"""\ndef scale():\n    # a comment\n    return 2\n\n'
        'class Cfg:\n    k: int = 32\n    """The number of live latents (an attribute docstring)."""\n'
    )
    code_version.cache_clear()
    store.get_or_build("thing", {"p": 1}, _writer(calls), code=("toy_builder",))
    assert len(calls) == 1
    module.write_text('"""v1"""\ndef scale():\n    return 2\n\nclass Cfg:\n    k: int = 64\n    """k."""\n')
    code_version.cache_clear()
    art = store.get_or_build("thing", {"p": 1}, _writer(calls), code=("toy_builder",))
    assert len(calls) == 2 and art.manifest["code_version"] == code_version("toy_builder")
    code_version.cache_clear()
    sys.modules.pop("toy_builder", None)


def test_old_manifests_are_not_trusted(tmp_path):
    art = Store(tmp_path).get_or_build("thing", {"p": 1}, _writer([]))
    manifest = json.loads((art.path / "manifest.json").read_text())
    manifest["files"] = {"x.txt": 5}
    del manifest["format"]
    (art.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="manifest format"):
        assert Store(tmp_path).get("thing", {"p": 1}) is None


def test_leftovers_of_killed_builds_are_cleaned_with_a_notice(tmp_path, monkeypatch):
    kind = tmp_path / "thing"
    dead = kind / f".tmp-abc-{store_module._HOST}-999999999"  # no such process
    alive = kind / f".tmp-def-{store_module._HOST}-{os.getpid()}"
    foreign = kind / ".tmp-ghi-otherhost-1"
    aside = kind / ".corrupt-jkl-20260101-000000"
    for folder in (dead, alive, foreign, aside):
        folder.mkdir(parents=True)
    old = time.time() - 3600
    for folder in (dead, alive, foreign, aside):
        os.utime(folder, (old, old))
    monkeypatch.setattr(store_module, "_STARTED", time.time())
    with pytest.warns(UserWarning, match="deleted 2 folder"):
        removed = Store(tmp_path).clean()
    assert set(removed) == {dead, aside}
    assert alive.exists() and foreign.exists()  # a live build, and another host's recent one
    assert "deleted 2 folder" in (tmp_path / "cache.log").read_text()


def test_provenance_sees_uncommitted_changes_from_the_package_folder(tmp_path):
    """git runs in the package's folder (src/<package>/): a change to a profile two levels up must
    still make the findings say "with uncommitted changes"."""
    import subprocess

    from sae_studies.store import git_dirty

    def git(*args):
        subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=tmp_path, check=True, capture_output=True)

    package = tmp_path / "src" / "pkg"
    package.mkdir(parents=True)
    (package / "m.py").write_text("x = 1\n")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "p.yaml").write_text("a: 1\n")
    (tmp_path / "figures.md").write_text("out\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "c")
    assert not git_dirty(package)
    (tmp_path / "figures.md").write_text("changed output\n")  # outputs are not provenance
    assert not git_dirty.__wrapped__(package)
    (tmp_path / "configs" / "p.yaml").write_text("a: 2\n")
    assert git_dirty.__wrapped__(package)
