"""Write-then-rename: an output appears under its final name only when it is complete."""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success ``os.replace`` it into place, on error delete it.

    The temporary name keeps the final suffix (``.name.tmp123.png``) so writers that pick a format from the
    suffix (Pillow, safetensors, numpy) still work.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    # Not created here: the writer creates it, so the file gets the usual permissions (umask), not 0600.
    tmp_path = final.with_name(f".{final.stem}.{uuid.uuid4().hex[:12]}.tmp{final.suffix}")
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
