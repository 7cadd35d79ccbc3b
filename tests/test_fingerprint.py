"""Fast model fingerprints for manifests."""

from __future__ import annotations

from pathlib import Path

from svi.fingerprint import CHUNK, fingerprint_files, fingerprint_model


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
