"""``python -m stylemotion.ext build|status``: build cpp_ext, or say what is built and what ``impl="auto"`` runs."""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    from . import _ext, ops
    from .errors import StylemotionError

    p = argparse.ArgumentParser(prog="python -m stylemotion.ext", description=__doc__)
    p.add_argument("command", choices=["build", "status"])
    p.add_argument("--cuda", action="store_true", default=None, help="also build the CUDA kernels")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.command == "build":
        try:
            path = _ext.build(cuda=args.cuda, verbose=args.verbose)
        except StylemotionError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"built {path}")
    print(json.dumps(ops.available(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
