"""Local folder as a batch source and as an export destination."""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import mimetypes
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field

from blocks.errors import DocumentError, SourceUnavailable
from blocks.models import DocumentRef, ErrorKind


@functools.cache
def _guess_type(extension: str) -> str | None:
    return mimetypes.guess_type(f"x{extension}")[0] if extension else None


def matches(relative: str, include: list[str], exclude: list[str]) -> bool:
    """Glob filter on a '/'-separated relative path.

    A pattern without '/' matches the file name at any depth (`*.pdf`); a pattern with '/'
    matches the whole relative path (`2024/*.pdf`, where `*` also crosses folders).
    """

    def hit(pattern: str) -> bool:
        target = relative if "/" in pattern else relative.rsplit("/", 1)[-1]
        return fnmatch.fnmatchcase(target.lower(), pattern.lower())

    if include and not any(hit(p) for p in include):
        return False
    return not any(hit(p) for p in exclude)


class LocalDirectory(Block):
    """A folder on this machine whose files form one batch.

    Hidden files and folders (names starting with '.') are skipped; symlinks are followed only
    while they stay inside the folder; anything else that is not a regular file is refused.
    """

    _block_type_name: ClassVar[str] = "Local Directory Source"
    _block_type_slug: ClassVar[str] = "local-directory"
    _description: ClassVar[str] = "A folder on the worker's disk whose documents form a batch."

    path: str = Field(description="Folder to read, absolute or relative to the worker's working directory.")
    include: list[str] = Field(default_factory=list, description="Glob patterns a file must match (any of); empty means all files.")
    exclude: list[str] = Field(default_factory=list, description="Glob patterns that drop a file (any of).")
    recursive: bool = Field(default=True, description="Descend into sub-folders.")

    @property
    def root(self) -> Path:
        return Path(self.path).expanduser()

    def describe(self) -> str:
        return str(self.root)

    def check(self) -> None:
        """Raise `SourceUnavailable` with a sentence a user can act on, before any work."""
        root = self.root
        if not root.exists():
            raise SourceUnavailable(f"source folder {str(root)!r} does not exist")
        if not root.is_dir():
            raise SourceUnavailable(f"source {str(root)!r} is not a folder")
        if not os.access(root, os.R_OK | os.X_OK):
            raise SourceUnavailable(f"source folder {str(root)!r} is not readable by this user")

    def iter_documents(self) -> Iterator[DocumentRef]:
        """Yield documents in a stable order (sorted relative paths), holding no bytes.

        Works on path strings with cached media types: pathlib objects and mimetypes took
        over half of the 0.8 s a 10,000-file folder took to list here.
        """
        self.check()
        root = str(self.root.resolve())
        index = 0
        filtered = bool(self.include or self.exclude)
        for relative, path, refused, info in self._walk(root, ""):
            if filtered and not matches(relative, self.include, self.exclude):
                continue
            yield self._ref(index, relative, path, refused, info)
            index += 1

    def _walk(self, root: str, prefix: str) -> Iterator[tuple[str, str, str | None, os.stat_result | None]]:
        folder = os.path.join(root, prefix) if prefix else root
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            if not prefix:
                raise SourceUnavailable(f"cannot list {folder!r}: {exc.strerror or exc}") from None
            yield prefix.rstrip("/"), folder.rstrip("/"), f"folder could not be listed: {exc.strerror or exc}", None
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            relative = prefix + entry.name
            path = entry.path
            if entry.is_symlink():
                target = os.path.realpath(path)
                if target != root and not target.startswith(root + os.sep):
                    yield relative, path, "symlink points outside the source folder", None
                    continue
                if os.path.isdir(target):
                    continue  # its contents are listed under their real path already
            try:
                info = entry.stat()
            except OSError:
                continue  # vanished while listing: it was never part of this batch
            if stat.S_ISDIR(info.st_mode):
                if self.recursive:
                    yield from self._walk(root, relative + "/")
            elif stat.S_ISREG(info.st_mode):
                yield relative, path, None, info
            else:
                yield relative, path, "not a regular file (device, socket or pipe)", info

    def _ref(self, index: int, relative: str, path: str, refused: str | None, info: os.stat_result | None) -> DocumentRef:
        if info is None:
            try:
                info = os.lstat(path)
            except OSError:
                info = None
        size, mtime_ns = (info.st_size, info.st_mtime_ns) if info is not None else (0, 0)
        # Validated, although every value comes from a stat result: pydantic-core's validation
        # (about 4 µs) costs half of `model_construct`'s Python loop (about 9 µs), 0.05 s per
        # 10,000 files.
        return DocumentRef(
            index=index,
            uri=path,
            name=relative,
            size=size,
            modified=datetime.fromtimestamp(mtime_ns / 1e9, tz=timezone.utc) if mtime_ns else None,
            fingerprint=f"{size}:{mtime_ns}",
            media_type=_guess_type(os.path.splitext(relative)[1].lower()),
            refused=refused,
        )

    def read(self, ref: DocumentRef, max_bytes: int) -> tuple[bytes, list[str]]:
        """Bytes of one document now, plus warnings when it changed since listing.

        Four system calls on a raw descriptor (open, fstat, read, close): each one releases and
        retakes the GIL, and with a dozen busy threads every extra round trip cost a batch of
        tiny files measurable time (pathlib's stat + buffered open + read made seven).
        O_NONBLOCK keeps a file that became a pipe since listing from blocking the open.
        """
        try:
            fd = os.open(ref.uri, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise DocumentError(ErrorKind.vanished, "the file was deleted or moved after it was listed") from None
        except PermissionError:
            raise DocumentError(ErrorKind.permission_denied, "the file is not readable by this user") from None
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise DocumentError(ErrorKind.refused, "became a folder after it was listed")
            if not stat.S_ISREG(info.st_mode):
                raise DocumentError(ErrorKind.refused, "no longer a regular file")
            if info.st_size > max_bytes:
                raise DocumentError(ErrorKind.too_large, f"{info.st_size:,} bytes, over the limit of {max_bytes:,}")
            # Sized to the file (plus one byte to notice growth), not to the limit: a read of
            # the whole limit would allocate it up front.
            data = _read_up_to(fd, min(max_bytes, info.st_size) + 1)
            if len(data) > info.st_size:  # grew since the fstat: read on, up to the limit
                data += _read_up_to(fd, max_bytes + 1 - len(data))
        except PermissionError:
            raise DocumentError(ErrorKind.permission_denied, "the file is not readable by this user") from None
        except OSError as exc:  # EIO and the like, e.g. a network file system hiccup: worth a retry
            raise DocumentError(ErrorKind.internal, f"reading the file failed: {exc.strerror or exc}", transient=True) from None
        finally:
            os.close(fd)
        if len(data) > max_bytes:
            raise DocumentError(ErrorKind.too_large, f"grew past the limit of {max_bytes:,} bytes while being read")
        warnings = []
        if f"{info.st_size}:{info.st_mtime_ns}" != ref.fingerprint:
            warnings.append("modified after listing; extracted as it is now")
        return data, warnings


def _read_up_to(fd: int, size: int) -> bytes:
    """Up to `size` bytes, fewer only at the end of the file (one read for a regular file)."""
    data = os.read(fd, size)
    if len(data) == size or not data:
        return data
    chunks = [data]
    remaining = size - len(data)
    while remaining:
        chunk = os.read(fd, remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


class LocalFolder(Block):
    """A folder where exports are written atomically: temporary name, fsync, rename."""

    _block_type_name: ClassVar[str] = "Local Folder Destination"
    _block_type_slug: ClassVar[str] = "local-folder"
    _description: ClassVar[str] = "A folder on the worker's disk that receives a batch's exports."

    path: str = Field(default="output", description="Folder that receives one sub-folder per batch.")

    def location(self, *parts: str) -> str:
        return str(Path(self.path, *parts).expanduser().absolute())

    @contextlib.contextmanager
    def atomic_path(self, *parts: str) -> Iterator[Path]:
        """A temporary path to write; renamed onto `parts` only if the block exits cleanly.

        A crash or exception leaves at most a hidden `.tmp` file, never a file with the final
        name that looks complete but is not.
        """
        with published(self.open_atomic(*parts)) as path:
            yield path

    def open_atomic(self, *parts: str) -> AtomicFile:
        """A file written over time (while a batch runs) and published under its name by `commit()`."""
        return AtomicFile(Path(self.location(*parts)))

    def exists(self, *parts: str) -> bool:
        return Path(self.location(*parts)).exists()

    def check(self) -> None:
        """Raise `SourceUnavailable` before any work when the folder could not be created or
        written; creates nothing (a refused batch leaves no trace)."""
        root = Path(self.location())
        existing = root
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise SourceUnavailable(f"the output folder {str(root)!r} cannot be created: {str(existing)!r} is a file", reason="destination")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise SourceUnavailable(f"the output folder {str(root)!r} cannot be written: {str(existing)!r} is not writable by this user", reason="destination")

    def link(self, *parts: str) -> str | None:
        return Path(self.location(*parts)).as_uri()

    def batch_folders(self) -> list[str]:
        """Names of the batch folders under this destination, oldest name first."""
        root = Path(self.location())
        if not root.is_dir():
            return []
        return sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))

    def read_text(self, *parts: str) -> str | None:
        """A whole file under this destination (a report.json), or None when there is none."""
        path = Path(self.location(*parts))
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def create_exclusive(self, *parts: str, body: str = "") -> bool:
        """Create a small file only if none exists (a lock); False when it already exists."""
        path = Path(self.location(*parts))
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(body)
        return True

    def delete(self, *parts: str) -> None:
        Path(self.location(*parts)).unlink(missing_ok=True)

    def open_journal(self, *parts: str) -> LocalJournalFile:
        """An append-only file of lines (the batch's checkpoint), flushed line by line."""
        return LocalJournalFile(Path(self.location(*parts)))

    def read_lines(self, *parts: str) -> Iterator[str] | None:
        """The lines of a file under this destination, or None when there is no such file."""
        path = Path(self.location(*parts))
        if not path.is_file():
            return None
        return _lines(path)

    def stream_lines(self, *parts: str) -> Iterator[str] | None:
        """The lines of a file, read as they are iterated (a large report.json), or None when there is none."""
        return self.read_lines(*parts)

    def list_journals(self, *parts: str) -> list[str]:
        """Names of the journals (`*.jsonl`) directly in the folder at `parts`, sorted."""
        folder = Path(self.location(*parts))
        return sorted(entry.name for entry in folder.glob("*.jsonl")) if folder.is_dir() else []

    def read_new_lines(self, *parts: str, cursor: int = 0) -> tuple[list[str], int]:
        """The complete lines appended to a journal since `cursor` (a byte offset), and the new cursor.

        A line still being written (no newline yet) is left for the next call.
        """
        try:
            with open(self.location(*parts), "rb") as handle:
                handle.seek(cursor)
                data = handle.read()
        except FileNotFoundError:
            return [], cursor
        end = data.rfind(b"\n") + 1
        if not end:
            return [], cursor
        return data[:end].decode("utf-8", errors="replace").splitlines(), cursor + end

    def delete_folder(self, *parts: str) -> None:
        """Delete the folder at `parts` and everything in it (a batch's segments once merged)."""
        shutil.rmtree(self.location(*parts), ignore_errors=True)

    def remove_temporaries(self, *parts: str) -> None:
        """Delete the hidden temporaries a killed run left in a folder and below it (its
        per-document files sit in `documents/` subfolders)."""
        for stale in Path(self.location(*parts)).rglob(".*.tmp"):
            stale.unlink(missing_ok=True)


def _lines(path: Path) -> Iterator[str]:
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        yield from handle


class LocalJournalFile:
    """Append-only lines; each `append` is handed to the OS at once, so it survives `kill -9`."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fresh = not path.exists() or path.stat().st_size == 0
        self._handle = path.open("a", encoding="utf-8")

    def append(self, line: str) -> None:
        self._handle.write(line)
        self._handle.flush()

    def close(self) -> None:
        # No fsync: every line is already with the OS, and the journal is deleted as soon as the
        # batch's report is published; an fsync here only delayed every batch's end.
        if not self._handle.closed:
            self._handle.close()

    def delete(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def published(pending: Any) -> Iterator[Path]:
    """Yield a pending file's temporary path; publish it (`commit`) only if the block exits cleanly."""
    try:
        yield pending.path
        pending.commit()
    finally:
        pending.abort()


class AtomicFile:
    """A hidden temporary file beside `final`, renamed onto it only by `commit()`.

    Until then readers see either the previous complete file or nothing; `abort()` (also safe
    after a commit) removes the temporary. A crash leaves at most a hidden `.tmp` file.
    """

    def __init__(self, final: Path) -> None:
        self.final = final
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
        self.path = Path(temporary)
        self.committed = False

    def commit(self) -> None:
        with self.path.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(self.path, 0o666 & ~_umask())  # mkstemp's 0600 is for the temporary only
        os.replace(self.path, self.final)
        self.committed = True

    def abort(self) -> None:
        if not self.committed:
            self.path.unlink(missing_ok=True)
