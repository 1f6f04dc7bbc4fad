"""`observatory`: the command line. Exit codes: 0 ok, 1 error, 2 usage."""
from __future__ import annotations

import os
import sys

# OpenMP threads that finish a parallel region spin-wait for the next one by default. On a CPU
# shared with other processes a spinning thread holds a core another process's thread waits
# for: a tiny decode step measured 5-50x slower and wildly noisy. Set before torch (and its
# libgomp) loads; an explicit OMP_WAIT_POLICY wins, and profilers/environment.py records it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from app.parsers import build_parser  # noqa: E402

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


# The module that holds each command's `cmd_<name>`.
HANDLERS = {
    "ingest": "app.commands", "runs": "app.commands", "report": "app.commands", "sql": "app.commands",
    "demo": "app.demo",
    "list": "app.workload_commands", "run": "app.workload_commands", "sweep": "app.workload_commands", "compare": "app.workload_commands",
    "diff": "app.diff_command",
    "reproduce": "app.reproduce",
    "deviation": "app.numerics_commands",
    "dashboard": "app.dashboard.command",
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 0 for --help, 2 for usage errors
        return int(exc.code or 0)
    from importlib import import_module

    handler = getattr(import_module(HANDLERS[args.command]), f"cmd_{args.command}")
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("observatory: interrupted; nothing half-written was kept", file=sys.stderr)
        return EXIT_ERROR
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        print(f"observatory {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
