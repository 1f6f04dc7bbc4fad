"""`observatory dashboard`: start the Streamlit app over the store (read-only), on 127.0.0.1 by default.

    observatory dashboard [--db PATH] [--port N] [--host ADDRESS]

The process becomes Streamlit's server (exec), so Ctrl-C or a signal to its pid stops it.
Also runnable as `python -m app.dashboard.command` with the same arguments.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from app.parsers import DEFAULT_PORT, LOOPBACK, add_dashboard
from store.db import Store, StoreError

MAIN = Path(__file__).resolve().parent / "main.py"


def streamlit_argv(host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(MAIN),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--browser.gatherUsageStats", "false",
        "--client.showErrorDetails", "none",  # an unexpected error says so, without a traceback
        "--client.toolbarMode", "viewer",
    ]


def cmd_dashboard(args: argparse.Namespace) -> int:
    store = Store(args.db) if args.db else Store()  # a path that cannot be a store fails here, naming it
    return serve(store, args.host, args.port)


def serve(store: Store, host: str = LOOPBACK, port: int = DEFAULT_PORT) -> int:
    """Become the dashboard's server for `store` (never returns)."""
    if not 0 < port < 65536:
        raise ValueError(f"--port {port}: expected a port number from 1 to 65535")
    state = "" if store.exists() else " (no store there yet: the dashboard explains how to fill it)"
    print(f"Observatory dashboard for {store.path}{state}", flush=True)
    print(f"  http://{host}:{port}   (Ctrl-C stops it)", flush=True)
    if host != LOOPBACK:
        print(f"  bound to {host}: anyone who can reach this address can read the store", file=sys.stderr, flush=True)
    env = {**os.environ, "OBSERVATORY_DB": str(store.path)}
    argv = streamlit_argv(host, port)
    os.execve(argv[0], argv, env)  # never returns: this process becomes the server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="observatory")
    sub = parser.add_subparsers(dest="command", required=True)
    add_dashboard(sub, lambda p: p.add_argument("--db", metavar="PATH", help="the store (default: $OBSERVATORY_DB or ./observatory.duckdb)"))
    args = parser.parse_args(["dashboard", *(sys.argv[1:] if argv is None else argv)])
    try:
        return cmd_dashboard(args)
    except (ValueError, StoreError) as exc:
        print(f"observatory dashboard: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
