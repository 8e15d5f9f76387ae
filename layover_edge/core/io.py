"""File I/O every layer shares: atomic writes (a crash never leaves a half-written file under the
final name), JSON read with one clear error, file digests, figures, and the lock that keeps two
processes from writing one cache or run folder.

Every failed write surfaces as an OSError naming the file the user asked for (never a temporary
name, never a library's own error type), so the CLI reports them all in one place."""
from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import LayoverError, NotFound


def make_dir(path: str | os.PathLike) -> Path:
    """``mkdir -p``; a file in the way is "Not a directory" naming it, not "File exists"."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next(p for p in (path, *path.parents) if p.exists() and not p.is_dir())
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(blocker)) from None
    return path


@contextmanager
def _named(path: Path) -> Iterator[None]:
    """Re-raise an OSError about the temporary sibling of ``path`` (or a file inside it) as one about
    ``path`` itself: the name the user gave."""
    try:
        yield
    except OSError as e:
        parts = Path(e.filename).parts if e.filename is not None else ()
        tmp = [i for i, part in enumerate(parts) if part.startswith(f".{path.name}.")]
        if e.filename is None or tmp:
            named = path.joinpath(*parts[tmp[-1] + 1:]) if tmp else path
            raise OSError(e.errno, e.strerror or str(e), os.fspath(named)) from None
        raise


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it replaces ``path`` in one rename."""
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():
        raise LayoverError(f"{path} is a device, pipe or socket, not a file: outputs are written to a temporary "
                           f"file and renamed over their name, which must never happen to one of those")
    make_dir(path.parent)
    with _named(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp)
        try:
            yield tmp
            if tmp.exists():  # mkstemp makes 0600; published files get the usual umask mode
                os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` written atomically. Serialised in memory first: torch reports a failed write
    (a full disk) as a RuntimeError about stream positions, Python's own write says ENOSPC."""
    import torch
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getbuffer())


def safetensors_bytes(tensors: dict, metadata: dict[str, str]) -> bytes:
    """A safetensors file's bytes (written by ``write_bytes``: safetensors' own writer reports a full
    disk as a SafetensorError)."""
    from safetensors.torch import save
    return save(tensors, metadata=metadata)


@contextmanager
def exclusive(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold ``folder/.lock`` while this process writes ``folder`` (a feature cache, a run): a second
    writer is refused instead of interleaving with the first. The kernel drops the lock when the
    process dies, kill -9 included, so a resume never waits on a stale one."""
    folder = make_dir(folder)
    with _named(folder / ".lock"):
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LayoverError(f"{what} {folder} is being written by another process right now: wait for it "
                               f"to finish, or choose another folder") from None
        yield
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def json_safe(obj: Any) -> Any:
    """NaN and infinities become null: strict JSON readers reject them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def read_json(path: str | os.PathLike, fmt: str | None = None, what: str = "JSON file") -> Any:
    """A JSON file; one clear error naming ``what`` if it is missing, unreadable or truncated, or,
    with ``fmt``, of another format (files this package wrote carry a ``format`` key)."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{what} not found: {path}")
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LayoverError(f"{what} {path} is not valid JSON (truncated?): {e}") from None
    if fmt is not None and (not isinstance(doc, dict) or doc.get("format") != fmt):
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise LayoverError(f"{path}: unknown format {found!r}, expected {fmt!r}")
    return doc


def read_text(path: str | os.PathLike) -> str:
    """A text file as UTF-8, a leading BOM dropped (spreadsheet programs write one); LayoverError
    naming the file and line for anything else (latin-1, UTF-16): guessing would garble names."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise LayoverError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save it as UTF-8") from None


def sha256(path: str | os.PathLike) -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces ``path`` (and anything there) on success."""
    path = Path(path)
    make_dir(path.parent)
    with _named(path):
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            yield tmp
            mask = _umask()  # mkdtemp makes 0700: publish with the modes every other output has
            for f in tmp.rglob("*"):
                os.chmod(f, (0o777 if f.is_dir() else 0o666) & ~mask)
            os.chmod(tmp, 0o777 & ~mask)
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
                os.replace(path, old / "x")
                os.replace(tmp, path)
                shutil.rmtree(old)
            else:
                os.replace(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """A matplotlib figure as a PNG, written atomically, then closed (figures hold memory)."""
    import matplotlib.pyplot as plt
    path = Path(path)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return path
