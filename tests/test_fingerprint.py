"""Fast model fingerprints for manifests."""

from __future__ import annotations

from pathlib import Path

import pytest

from svi import fingerprint
from svi.fingerprint import CHUNK, code_commit, fingerprint_files, fingerprint_model, sha256_file


def test_fingerprint_sees_head_tail_and_size_changes(tmp_path: Path) -> None:
    big = tmp_path / "w.safetensors"
    data = bytearray(b"x" * (3 * CHUNK))
    big.write_bytes(bytes(data))
    base = fingerprint_files([big])
    copy = tmp_path / "c" / "w.safetensors"
    copy.parent.mkdir()
    copy.write_bytes(bytes(data))
    assert fingerprint_files([copy]) == base  # content, not location
    for where in (0, len(data) - 1):  # the header and the last bytes are read
        changed = bytearray(data)
        changed[where] = ord("y")
        big.write_bytes(bytes(changed))
        assert fingerprint_files([big]) != base
    big.write_bytes(bytes(data[:-1]))
    assert fingerprint_files([big]) != base


def test_model_folder_fingerprint(tmp_path: Path) -> None:
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "a.safetensors").write_bytes(b"123")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("ignored")
    first = fingerprint_model(tmp_path)
    (tmp_path / "notes.txt").write_text("still ignored")
    assert fingerprint_model(tmp_path) == first
    (tmp_path / "config.json").write_text('{"num_layers": 3}')
    assert fingerprint_model(tmp_path) != first


def test_whole_file_fingerprint_sees_the_middle(tmp_path: Path) -> None:
    """Cache keys hash every byte: a change between the sampled head and tail counts."""
    path = tmp_path / "w.safetensors"
    data = bytearray(b"x" * (3 * CHUNK))
    path.write_bytes(bytes(data))
    sampled, whole = fingerprint_files([path]), fingerprint_files([path], whole=True)
    data[len(data) // 2] = ord("y")
    path.write_bytes(bytes(data))
    assert fingerprint_files([path]) == sampled  # the fast fingerprint does not read it
    assert fingerprint_files([path], whole=True) != whole


def test_file_digests_are_read_once_but_never_stale(tmp_path: Path, monkeypatch) -> None:
    """A settled file is read once per process; a rewrite (even within one timestamp
    tick, same size) is read again, because a freshly touched file is never remembered."""
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"a" * 100)
    first = sha256_file(path)
    assert not any(k[0] == str(path.resolve()) for k in fingerprint._DIGESTS)  # fresh: not kept
    path.write_bytes(b"b" * 100)  # same size, perhaps the same coarse timestamp
    assert sha256_file(path) != first
    monkeypatch.setattr(fingerprint, "SETTLED_NS", -(10**12))  # treat every file as settled
    settled = sha256_file(path)

    def no_reading(*args, **kwargs):
        raise AssertionError("read again")

    monkeypatch.setattr(fingerprint, "open", no_reading, raising=False)
    assert sha256_file(path) == settled  # remembered
    path.write_bytes(b"c" * 101)  # a rewrite changes the key: read again
    with pytest.raises(AssertionError, match="read again"):
        sha256_file(path)


def test_code_commit_names_this_checkout() -> None:
    import subprocess

    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=False).stdout.strip()  # fmt: skip
    commit = code_commit()
    if not head:  # not a git checkout (an unpacked sdist)
        assert commit == "unknown"
    else:
        assert commit.removesuffix("+dirty") == head
