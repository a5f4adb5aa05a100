"""The Large Movie Review Dataset (IMDB), read straight from the official archive or its extracted folder.

Nothing is extracted to disk: the tar.gz is streamed member by member. The test split is read only by
evaluation; training carves its validation set out of train (`stratified_split`).
"""

from __future__ import annotations

import hashlib
import random
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

OFFICIAL_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
OFFICIAL_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
SPLITS = ("train", "test", "unsup")


@dataclass(frozen=True)
class Review:
    text: str
    label: int  # 1 positive, 0 negative, -1 unlabelled
    rating: int  # 1-10 from the file name, 0 when unlabelled
    split: str


def _parse_member(name: str) -> tuple[str, int] | None:
    """Map `aclImdb/<split>/<pos|neg|unsup>/<id>_<rating>.txt` to (split, label), or None to skip."""
    parts = name.replace("\\", "/").split("/")
    if len(parts) < 3 or not parts[-1].endswith(".txt"):
        return None
    split, folder = parts[-3], parts[-2]
    if split == "train" and folder == "unsup":
        return "unsup", -1
    if split in ("train", "test") and folder in ("pos", "neg"):
        return split, int(folder == "pos")
    return None


def _rating(filename: str) -> int:
    stem = filename.rsplit("/", 1)[-1][: -len(".txt")]
    try:
        return int(stem.split("_", 1)[1])
    except (IndexError, ValueError):
        return 0


def iter_reviews(path: str | Path, splits: tuple[str, ...] = ("train", "test")) -> Iterator[Review]:
    """Yield reviews of the given splits from `aclImdb_v1.tar.gz` or the extracted `aclImdb/` folder."""
    path = Path(path)
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; choose from {SPLITS}")
    if not path.exists():
        raise FileNotFoundError(f"dataset not found at {path}; pass the aclImdb_v1.tar.gz archive, its extracted "
                                f"folder, or use --download")
    if path.is_dir():
        root = path / "aclImdb" if (path / "aclImdb").is_dir() else path
        for split, folder, label in (("train", "pos", 1), ("train", "neg", 0), ("test", "pos", 1),
                                     ("test", "neg", 0), ("unsup", "unsup", -1)):
            if split not in splits:
                continue
            directory = root / ("train" if split == "unsup" else split) / folder
            for file in sorted(directory.glob("*.txt")):
                yield Review(file.read_text(encoding="utf-8"), label, _rating(file.name), split)
        return
    with tarfile.open(path, mode="r|*") as archive:  # stream mode: one pass, no random access, no extraction
        for member in archive:
            if not member.isfile():
                continue
            parsed = _parse_member(member.name)
            if parsed is None or parsed[0] not in splits:
                continue
            handle = archive.extractfile(member)
            assert handle is not None
            text = handle.read().decode("utf-8")
            yield Review(text, parsed[1], _rating(member.name), parsed[0])


def load_splits(path: str | Path, splits: tuple[str, ...] = ("train", "test")) -> dict[str, list[Review]]:
    """All reviews of the requested splits, grouped by split, in a stable order."""
    grouped: dict[str, list[Review]] = {s: [] for s in splits}
    for review in iter_reviews(path, splits):
        grouped[review.split].append(review)
    for split in ("train", "test"):
        if split in grouped and not grouped[split]:
            raise ValueError(f"no '{split}' reviews found in {path}: is it the aclImdb archive?")
    return grouped


def stratified_split(reviews: list[Review], fraction: float, seed: int) -> tuple[list[Review], list[Review]]:
    """Seeded split keeping the label balance: returns (rest, held_out) with `fraction` of each label held out."""
    rng = random.Random(seed)
    rest: list[Review] = []
    held: list[Review] = []
    for label in sorted({r.label for r in reviews}):
        group = [r for r in reviews if r.label == label]
        rng.shuffle(group)
        k = round(len(group) * fraction)
        held.extend(group[:k])
        rest.extend(group[k:])
    rng.shuffle(rest)
    rng.shuffle(held)
    return rest, held


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(dest: str | Path, url: str = OFFICIAL_URL, sha256: str | None = OFFICIAL_SHA256,
             progress: Callable[[int, int | None], None] | None = None, timeout: float = 60.0) -> Path:
    """Download the archive to `dest` (skipped when a file with the right checksum is already there).

    The file is written to `dest.part` and renamed only after its checksum matches, so an interrupted or
    corrupted download never looks complete. `progress(bytes_done, total)` is called per chunk.
    """
    dest = Path(dest)
    if dest.exists() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
        total = response.length
        done = 0
        while block := response.read(1 << 20):
            out.write(block)
            digest.update(block)
            done += len(block)
            if progress:
                progress(done, total)
    if sha256 is not None and digest.hexdigest() != sha256:
        part.unlink(missing_ok=True)
        raise ValueError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {digest.hexdigest()}")
    part.replace(dest)
    return dest
