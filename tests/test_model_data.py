"""Reading the IMDB layout from a tar.gz and from a folder, the split, and --download against a local server."""

import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import pytest

from model import data as imdb

FILES = {
    "aclImdb/train/pos/0_9.txt": "A wonderful film.<br /><br />Loved it.",
    "aclImdb/train/pos/1_8.txt": "Great acting.",
    "aclImdb/train/neg/2_1.txt": "Awful. Just awful.",
    "aclImdb/train/neg/3_3.txt": "Boring plot.",
    "aclImdb/train/unsup/4_0.txt": "I watched it on a Tuesday.",
    "aclImdb/test/pos/5_10.txt": "Masterpiece — ünïcødé ✓",
    "aclImdb/test/neg/6_2.txt": "Waste of time.",
    "aclImdb/README": "not a review",
}


def make_archive(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in FILES.items():
            payload = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def make_folder(root: Path) -> Path:
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def key(r):
    return (r.split, r.label, r.rating, r.text)


def test_archive_and_folder_read_the_same(tmp_path):
    archive = make_archive(tmp_path / "aclImdb_v1.tar.gz")
    folder = make_folder(tmp_path / "extracted")
    splits = ("train", "test", "unsup")
    from_tar = sorted(map(key, imdb.iter_reviews(archive, splits)))
    from_dir = sorted(map(key, imdb.iter_reviews(folder, splits)))
    assert from_tar == from_dir
    assert len(from_tar) == 7
    assert ("test", 1, 10, "Masterpiece — ünïcødé ✓") in from_tar
    assert ("unsup", -1, 0, "I watched it on a Tuesday.") in from_tar
    # the folder's aclImdb/ itself works too
    assert sorted(map(key, imdb.iter_reviews(folder / "aclImdb", splits))) == from_dir


def test_only_requested_splits_are_read(tmp_path):
    archive = make_archive(tmp_path / "a.tar.gz")
    assert {r.split for r in imdb.iter_reviews(archive, ("test",))} == {"test"}
    with pytest.raises(ValueError, match="unknown split"):
        list(imdb.iter_reviews(archive, ("validation",)))


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--download"):
        list(imdb.iter_reviews(tmp_path / "nope.tar.gz"))


def test_stratified_split_is_seeded_and_balanced():
    reviews = [imdb.Review(str(i), i % 2, 0, "train") for i in range(1000)]
    rest, held = imdb.stratified_split(reviews, 0.1, seed=3)
    assert len(held) == 100 and sum(r.label for r in held) == 50
    assert not {r.text for r in rest} & {r.text for r in held}
    assert [r.text for r in held] == [r.text for r in imdb.stratified_split(reviews, 0.1, seed=3)[1]]
    assert [r.text for r in held] != [r.text for r in imdb.stratified_split(reviews, 0.1, seed=4)[1]]


@pytest.fixture
def archive_server(tmp_path):
    archive = make_archive(tmp_path / "served.tar.gz")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/served.tar.gz", hashlib.sha256(archive.read_bytes()).hexdigest()
    server.shutdown()


def test_download_checks_the_checksum_and_reports_progress(archive_server, tmp_path):
    url, sha = archive_server
    seen = []
    dest = imdb.download(tmp_path / "dl" / "aclImdb_v1.tar.gz", url=url, sha256=sha,
                         progress=lambda done, total: seen.append((done, total)))
    assert imdb.sha256_file(dest) == sha
    assert seen and seen[-1][0] == seen[-1][1] == dest.stat().st_size
    assert len(list(imdb.iter_reviews(dest))) == 6  # train + test by default
    # a second call finds the verified file and downloads nothing
    seen.clear()
    imdb.download(dest, url=url, sha256=sha, progress=lambda d, t: seen.append(d))
    assert not seen


def test_download_with_wrong_checksum_leaves_no_file(archive_server, tmp_path):
    url, _ = archive_server
    dest = tmp_path / "bad.tar.gz"
    with pytest.raises(ValueError, match="checksum mismatch"):
        imdb.download(dest, url=url, sha256="0" * 64)
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()
