"""The one reader of ``.npz`` archives (latents, directions, ``generate --ws``): no pickles, sizes checked
against the archive before anything is decompressed, and every failure an ``InputError`` naming the file.

numpy's own reader lets zip-level errors through as ``zipfile.BadZipFile``, ``NotImplementedError`` (an unknown
compression method), ``EOFError`` or ``struct.error``, and would inflate a zip bomb in full; found by fuzzing
(tests/fuzz)."""
from __future__ import annotations

import os
import zipfile

import numpy as np

from .errors import InputError

MAX_MEMBERS = 256
MAX_TOTAL_BYTES = 2 << 30  # uncompressed, all members together
MAX_RATIO = 200  # uncompressed / compressed, per member (np.savez stores; savez_compressed reaches ~10 on floats)


def read_npz(path: str | os.PathLike, *, what: str) -> dict[str, np.ndarray]:
    """Every array of the archive at ``path``, fully read. ``what`` names the kind of file in messages."""
    where = str(path)
    try:
        with zipfile.ZipFile(where) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_MEMBERS:
                raise InputError(f"{where}: {len(infos)} arrays in one {what} file (at most {MAX_MEMBERS})")
            total = sum(i.file_size for i in infos)
            if total > MAX_TOTAL_BYTES:
                raise InputError(f"{where}: the {what} file declares {total} bytes of arrays (at most "
                                 f"{MAX_TOTAL_BYTES})")
            for i in infos:
                if i.file_size > MAX_RATIO * max(i.compress_size, 1) + 4096:
                    raise InputError(f"{where}: member {i.filename!r} inflates {i.file_size} bytes from "
                                     f"{i.compress_size} (a zip bomb?)")
        with np.load(where, allow_pickle=False) as data:
            return {key: np.asarray(data[key]) for key in data.files}
    except InputError:
        raise
    except FileNotFoundError as exc:
        raise InputError(f"{where}: no such {what} file") from exc
    except MemoryError as exc:
        raise InputError(f"{where}: the {what} file needs more memory than there is") from exc
    except Exception as exc:  # zipfile, zlib, numpy's format parser and the OS raise a dozen types between them
        raise InputError(f"{where}: cannot read the {what} file ({type(exc).__name__}: {exc})") from exc
