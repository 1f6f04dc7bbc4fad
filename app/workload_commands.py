"""Workload commands (list, run, sweep, compare): added with the workload adapters."""
from __future__ import annotations


def add_parsers(sub, add_db, add_format) -> None:
    """Nothing yet."""
