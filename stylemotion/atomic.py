"""Write-then-rename: an output appears under its final name only when it is complete, even after ``kill -9``.

Every writer follows one protocol: write a temporary beside the final name -> flush -> fsync the temporary (every
file in it, for a folder) -> ``os.replace`` onto the final name -> fsync the folder, so the rename itself survives
a power cut. A process killed before the rename leaves only a temporary, never a torn file under a final name.

Temporaries are named ``.<stem>.<host>-<pid>-<random>.<kind><suffix>``: hidden, keeping the final suffix (writers
that pick a format from it still work), and saying who wrote them. The next writer of the same output removes the
temporaries whose process is gone (same host, pid no longer alive); a temporary of a live process, or of another
host sharing the folder, is left alone.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Iterator

_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def temporary_name(final: str | os.PathLike, kind: str = "tmp") -> Path:
    """A fresh temporary path beside ``final`` (``kind`` is ``tmp`` or ``partial``)."""
    final = Path(final)
    return final.with_name(f".{final.stem}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.{kind}{final.suffix}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_temporaries(final: str | os.PathLike) -> list[Path]:
    """Temporaries of ``final`` left by processes of this host that no longer run."""
    final = Path(final)
    prefix, out = f".{final.stem}.{_HOST}-", []
    try:
        entries = list(os.scandir(final.parent))
    except OSError:
        return out
    for entry in entries:
        name = entry.name
        if not name.startswith(prefix) or not name.endswith(final.suffix):
            continue
        middle = name[len(prefix):len(name) - len(final.suffix)]  # "<pid>-<random>.<kind>"
        pid, _, rest = middle.partition("-")
        if pid.isdigit() and rest.count(".") == 1 and rest.split(".")[1] in ("tmp", "partial") \
                and not _pid_alive(int(pid)):
            out.append(Path(entry.path))
    return out


def remove_stale_temporaries(final: str | os.PathLike) -> list[Path]:
    """Delete what ``stale_temporaries`` finds; returns the paths removed."""
    stale = stale_temporaries(final)
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a folder's entries (a rename into it) durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename is still atomic
    finally:
        os.close(fd)


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file, or every file of a folder and then the folder itself."""
    path = Path(path)
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file():
                fsync_path(child)
        fsync_dir(path)
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: str | os.PathLike, final: str | os.PathLike) -> Path:
    """fsync ``tmp``, rename it onto ``final``, fsync the folder: the last step of every writer."""
    tmp, final = Path(tmp), Path(final)
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    return final


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, sweep: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends normally ``publish`` it, on error delete it.

    With ``sweep`` (the default) stale temporaries of the same output, left by a killed earlier run, go first.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    if sweep:
        remove_stale_temporaries(final)
    # Not created here: the writer creates it, so the file gets the usual permissions (umask), not 0600.
    tmp_path = temporary_name(final)
    try:
        yield tmp_path
        publish(tmp_path, final)
    except BaseException:
        if tmp_path.is_dir() and not tmp_path.is_symlink():
            shutil.rmtree(tmp_path, ignore_errors=True)
        else:
            tmp_path.unlink(missing_ok=True)
        raise
