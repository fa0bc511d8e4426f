import json

import pytest

from sae_studies.store import Store, params_key


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
    assert manifest["files"] == {"x.txt": 5} and "torch" in manifest["versions"]


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
        again = store.get_or_build("thing", {"p": 1}, _writer(calls))
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
