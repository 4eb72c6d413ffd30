"""File primitives shared by every writer: atomic replace and append-only JSONL.

A file that is replaced goes through a temp file in the same directory + fsync + rename, so a
reader never sees half a file. JSONL is append-only, one line per write, flushed; readers skip a
torn (unparseable) last line, which is what a kill mid-write leaves behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path next to `path`; on success it is fsynced and renamed onto `path`.

    For writers that want a file name (pyarrow, safetensors, matplotlib). The file gets the
    usual permissions (0666 minus the umask), not mkstemp's private 0600, so colleagues on a
    shared file system can read campaign files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def temp_dir(parent: str | Path, prefix: str) -> Path:
    """A new empty directory in `parent` for building a tree that `publish_dir` renames into
    place. Unlike mkdtemp's private 0700 it gets the usual 0777 minus the umask."""
    path = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    os.chmod(path, 0o777 & ~_UMASK)
    return path


def share_tree(root: str | Path) -> None:
    """Give the files and dirs under `root` the usual umask permissions: libraries that write
    through mkstemp (safetensors, torch.save) leave them private 0600, which keeps colleagues on a
    shared file system from reading adapters, checkpoints and cached models."""
    os.chmod(root, 0o777 & ~_UMASK)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o777 & ~_UMASK)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o666 & ~_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` atomically (temp file + fsync + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace `path` with `text` atomically (temp file + fsync + rename)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    # numpy scalars and paths show up in metrics dicts; write them as plain values.
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json_object(path: str | Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None if the file is missing, unreadable, not JSON, or not an
    object: for files a kill, a full disk or a user may have damaged."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON object as one line and flush it to the OS."""
    line = json.dumps(record, default=_json_default, allow_nan=True) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All complete records of a JSONL file; a torn or garbled line is skipped."""
    return list(iter_jsonl(path))


def iter_jsonl(path: str | Path, *, on_skip: Callable[[], None] | None = None) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL file, in order; a line that is not one (torn by a kill
    mid-write, damaged) is skipped, and `on_skip` is called for each such line."""
    p = Path(path)
    if not p.exists():
        return
    with open(p, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                obj = None
            if isinstance(obj, dict):
                yield obj
            elif on_skip is not None:
                on_skip()


def last_jsonl(path: str | Path, *, accept: Callable[[dict[str, Any]], bool] | None = None,
               max_bytes: int = 1 << 16) -> dict[str, Any] | None:
    """The newest complete record (optionally the newest that `accept`s) among the file's last
    `max_bytes`, without reading the whole file: for progress polls of long runs."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            start = max(0, size - max_bytes)
            fh.seek(start)
            lines = fh.read().split(b"\n")
    except FileNotFoundError:
        return None
    if start > 0:
        lines = lines[1:]  # the first line of the window may be cut
    for line in reversed(lines):
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # blank, or torn by a kill mid-write
        if isinstance(obj, dict) and (accept is None or accept(obj)):
            return obj
    return None


def truncate_jsonl_after(path: str | Path, step: int, key: str = "step") -> int:
    """Keep only records with `key` <= step (and drop torn lines); returns how many were dropped.

    Used on resume so that every step appears exactly once.
    """
    p = Path(path)
    if not p.exists():
        return 0
    kept: list[str] = []
    dropped = 0
    with open(p, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            s = line.strip()
            if not s:
                continue
            try:
                obj = json.loads(s)
            except json.JSONDecodeError:
                dropped += 1
                continue
            if isinstance(obj, dict) and isinstance(obj.get(key), int) and obj[key] > step:
                dropped += 1
                continue
            kept.append(s + "\n")
    atomic_write_text(p, "".join(kept))
    return dropped
