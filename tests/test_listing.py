"""Listing a local folder: order, hidden files, symlinks, filters, fingerprints, no bytes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from blocks.errors import DocumentError, SourceUnavailable
from blocks.local import LocalDirectory
from blocks.models import ErrorKind


def make_tree(root: Path) -> None:
    for relative, content in {
        "b.pdf": b"%PDF-1.4 b",
        "a.txt": b"alpha",
        "sub/c.txt": b"gamma",
        "sub/deeper/d.csv": b"x,y\n1,2\n",
        ".hidden.txt": b"secret",
        ".git/config": b"[core]",
        "sub/.DS_Store": b"\x00\x00",
    }.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def names(source: LocalDirectory) -> list[str]:
    return [ref.name for ref in source.iter_documents()]


def test_order_is_sorted_and_hidden_entries_are_skipped(tmp_path: Path) -> None:
    make_tree(tmp_path)
    refs = list(LocalDirectory(path=str(tmp_path)).iter_documents())
    assert [r.name for r in refs] == ["a.txt", "b.pdf", "sub/c.txt", "sub/deeper/d.csv"]
    assert [r.index for r in refs] == [0, 1, 2, 3]
    assert refs[0].size == 5
    stat = (tmp_path / "a.txt").stat()
    assert refs[0].fingerprint == f"{stat.st_size}:{stat.st_mtime_ns}"
    assert "alpha" not in refs[0].model_dump_json()  # references carry no bytes


def test_non_recursive_include_exclude(tmp_path: Path) -> None:
    make_tree(tmp_path)
    assert names(LocalDirectory(path=str(tmp_path), recursive=False)) == ["a.txt", "b.pdf"]
    assert names(LocalDirectory(path=str(tmp_path), include=["*.txt"])) == ["a.txt", "sub/c.txt"]
    assert names(LocalDirectory(path=str(tmp_path), include=["sub/*"], exclude=["*.csv"])) == ["sub/c.txt"]
    assert names(LocalDirectory(path=str(tmp_path), include=["*.PDF"])) == ["b.pdf"]


def test_symlinks_inside_are_listed_outside_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root)
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    (root / "link-out.txt").symlink_to(outside)
    (root / "link-in.txt").symlink_to(root / "a.txt")
    (root / "dir-out").symlink_to(tmp_path)
    refs = {r.name: r for r in LocalDirectory(path=str(root)).iter_documents()}
    assert refs["link-in.txt"].refused is None
    assert refs["link-out.txt"].refused == "symlink points outside the source folder"
    assert refs["dir-out"].refused == "symlink points outside the source folder"
    assert not any(name.startswith("dir-out/") for name in refs)


def test_fifo_is_refused_not_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.txt")
    (tmp_path / "ok.txt").write_text("ok")
    refs = list(LocalDirectory(path=str(tmp_path)).iter_documents())
    assert [(r.name, r.refused is not None) for r in refs] == [("ok.txt", False), ("pipe.txt", True)]


def test_missing_folder_and_file_instead_of_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match="does not exist"):
        list(LocalDirectory(path=str(tmp_path / "nope")).iter_documents())
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(SourceUnavailable, match="not a folder"):
        LocalDirectory(path=str(tmp_path / "file.txt")).check()


def test_read_reports_vanished_oversized_and_modified(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "big.txt").write_bytes(b"x" * 2000)
    source = LocalDirectory(path=str(tmp_path))
    refs = {r.name: r for r in source.iter_documents()}
    with pytest.raises(DocumentError) as raised:
        source.read(refs["big.txt"], max_bytes=1000)
    assert raised.value.kind == ErrorKind.too_large
    (tmp_path / "a.txt").write_text("alpha, longer now")
    data, warnings = source.read(refs["a.txt"], max_bytes=1000)
    assert data == b"alpha, longer now" and "modified after listing" in warnings[0]
    (tmp_path / "a.txt").unlink()
    with pytest.raises(DocumentError) as raised:
        source.read(refs["a.txt"], max_bytes=1000)
    assert raised.value.kind == ErrorKind.vanished
