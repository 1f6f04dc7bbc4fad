"""The one rule for what a user's SQL may be, for `observatory sql` and the dashboard's SQL box.

DuckDB parses the text, and exactly one read statement passes: SELECT and its forms (WITH,
FROM-first, VALUES, DESCRIBE, SHOW, SUMMARIZE, PRAGMA table_info) and EXPLAIN [ANALYZE] of one
of them. EXPLAIN ANALYZE runs what it explains, so the explained statement is checked too.
COPY, EXPORT, INSERT, CREATE, ATTACH, INSTALL, LOAD, SET, CALL ... are refused before they
reach the engine. Reading files (read_parquet, read_csv) is a SELECT; the dashboard's engine
locks that down on its own.
"""
from __future__ import annotations

import re

import duckdb

READ_FORMS = "SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN; PIVOT needs an explicit IN (...) list"
_GAP = r"(?:\s+|--[^\n]*|/\*.*?\*/)*"  # whitespace and comments
_EXPLAIN_PREFIX = re.compile(rf"{_GAP}EXPLAIN\b{_GAP}(?:ANALY[SZ]E\b{_GAP})?(?:\(\s*FORMAT\b[^)]*\){_GAP})?", re.IGNORECASE | re.DOTALL)


class QueryRefused(ValueError):
    """The query is not one read statement, or it reached outside what it may read."""


def check_read_statement(sql: str, refused_because: str) -> None:
    """Raise QueryRefused unless `sql` is exactly one read statement; `refused_because` says why, for the caller."""
    statement = _one_statement(sql)
    if statement.type == duckdb.StatementType.SELECT:
        return
    name = _first_word(statement.query)
    if statement.type == duckdb.StatementType.EXPLAIN:
        explained = _explained_statement(statement.query)
        if explained is not None and explained.type == duckdb.StatementType.SELECT:
            return
        name = f"EXPLAIN {_first_word(explained.query)}" if explained is not None else "EXPLAIN"
    raise QueryRefused(f"{name} statements are refused: {refused_because}. Read queries only ({READ_FORMS}).")


def _one_statement(sql: str) -> duckdb.Statement:
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRefused(f"the query does not parse: {first_line(exc)}") from None
    if not statements:
        raise QueryRefused("the query is empty: write one SELECT statement")
    if len(statements) > 1:
        raise QueryRefused(f"{len(statements)} statements given: run one statement at a time")
    return statements[0]


def _explained_statement(query: str) -> duckdb.Statement | None:
    """The statement after EXPLAIN [ANALYZE] [(FORMAT ...)], or None where that is not one statement."""
    prefix = _EXPLAIN_PREFIX.match(query)
    if prefix is None:
        return None
    try:
        statements = duckdb.extract_statements(query[prefix.end():])
    except duckdb.Error:
        return None
    return statements[0] if len(statements) == 1 else None


def _first_word(query: str) -> str:
    """The statement's keyword as written (INSTALL parses as a LOAD: name what was written)."""
    return re.sub(rf"^{_GAP}", "", query, flags=re.DOTALL).split(maxsplit=1)[0].upper()


def first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
