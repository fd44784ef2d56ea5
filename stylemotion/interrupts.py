"""SIGTERM handled like Ctrl-C, so every writer finishes or removes its output whichever of the two arrives.

Service managers and ``timeout`` stop a process with SIGTERM, whose default action ends it on the spot: a
half-written temporary file stays behind and a video is lost. Inside ``sigterm_as_interrupt()`` SIGTERM raises
``Terminated``, a ``KeyboardInterrupt``, and so takes the path Ctrl-C takes: ``VideoWriter`` finishes a playable
file of the frames done, ``atomic_path`` removes its temporary file, exports remove their work folder.

The handler is installed only by programs (the CLI, a server's main), never on import: a library must not take
over its host's signals.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM arrives inside ``sigterm_as_interrupt()``."""

    exit_code = 128 + signal.SIGTERM


def _raise_terminated(signum, frame) -> None:
    raise Terminated(f"terminated by signal {signum}")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated``; the previous handler comes back afterwards.

    Outside the main thread (where Python cannot set signal handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
