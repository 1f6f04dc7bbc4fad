"""`observatory sql`: every kind of value printed as table, CSV and JSON; one read statement, nothing written."""
from __future__ import annotations

import csv
import io
import json

import pytest

from app.cli import main
from store.db import Store

NESTED_COLUMNS = {  # column: (SQL, JSON value, CSV text)
    "one_item_list": ("[5]", [5], "[5]"),
    "struct_value": ("{'a': 1, 'b': [1, 2]}", {"a": 1, "b": [1, 2]}, '{"a": 1, "b": [1, 2]}'),
    "map_value": ("map([1, 2], ['x', 'y'])", {"1": "x", "2": "y"}, '{"1": "x", "2": "y"}'),
    "nested": ("[[1, 2], [3]]", [[1, 2], [3]], "[[1, 2], [3]]"),
    "blob_value": (r"'ab\x00'::BLOB", r"ab\x00", r"ab\x00"),
    "date_value": ("DATE '2020-01-02'", "2020-01-02", "2020-01-02"),
    "timestamp_value": ("TIMESTAMP '2020-01-02 03:04:05'", "2020-01-02T03:04:05", "2020-01-02T03:04:05"),
    "decimal_value": ("1.25::DECIMAL(5, 2)", 1.25, "1.25"),
    "nan_value": ("'nan'::DOUBLE", None, "NaN"),
    "null_value": ("NULL", None, ""),
    "double_value": ("2.5::DOUBLE", 2.5, "2.5"),
}
NESTED_QUERY = "SELECT " + ", ".join(f"{sql} AS {name}" for name, (sql, _, _) in NESTED_COLUMNS.items())


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("sql") / "o.duckdb"
    Store(path).ensure()
    return path


def sql(capsys, db, query: str, *options: str) -> tuple[int, str, str]:
    code = main(["sql", query, "--db", str(db), *options])
    out, err = capsys.readouterr()
    return code, out, err


def strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_json_prints_lists_structs_maps_blobs_dates_decimals_and_missing_values(capsys, db):
    code, out, err = sql(capsys, db, NESTED_QUERY, "--format", "json")
    assert code == 0, err
    assert strict_json(out) == [{name: value for name, (_, value, _) in NESTED_COLUMNS.items()}]


def test_json_keeps_a_one_item_list_a_list(capsys, db):
    code, out, err = sql(capsys, db, "SELECT [5] AS x", "--format", "json")
    assert code == 0, err
    assert strict_json(out) == [{"x": [5]}]


def test_csv_prints_nested_values_as_json_text(capsys, db):
    code, out, err = sql(capsys, db, NESTED_QUERY, "--format", "csv")
    assert code == 0, err
    header, row = list(csv.reader(io.StringIO(out)))
    assert header == list(NESTED_COLUMNS)
    assert row == [text for _, _, text in NESTED_COLUMNS.values()]


def test_table_prints_nested_values_as_json_text(capsys, db):
    code, out, err = sql(capsys, db, r"SELECT [5] AS x, {'a': 1, 'b': [1, 2]} AS s, 'ab\x00'::BLOB AS b, 'nan'::DOUBLE AS n")
    assert code == 0, err
    for text in ("[5]", '{"a": 1, "b": [1, 2]}', r"ab\x00", "NaN"):
        assert text in out, out


def test_frame_rows_and_query_output_share_one_conversion(db):
    from store.rows import plain_rows

    with Store(db).connect() as con:
        frame = con.execute("SELECT [5] AS x, {'a': [1]} AS s, map(['k'], [1]) AS m, 'nan'::DOUBLE AS n").df()
    assert plain_rows(frame) == [{"x": [5], "s": {"a": [1]}, "m": {"k": 1}, "n": None}]


WRITES = [
    "COPY (SELECT 1) TO '{out}'",
    "EXPLAIN ANALYZE COPY (SELECT 1) TO '{out}'",
    "-- a comment\nEXPLAIN ANALYZE /* another */ COPY (SELECT 1) TO '{out}'",
    "EXPORT DATABASE '{folder}'",
    "INSERT INTO runs SELECT * FROM runs",
    "ATTACH '{out}' AS other",
    "INSTALL httpfs",
    "SET threads = 1",
    "CREATE TEMP TABLE t AS SELECT 1",
    "CHECKPOINT",
]


@pytest.mark.parametrize("statement", WRITES)
def test_sql_refuses_anything_but_one_read_and_says_how_to_export(capsys, db, tmp_path, statement):
    out_file, folder = tmp_path / "out.csv", tmp_path / "export"
    code, out, err = sql(capsys, db, statement.format(out=out_file, folder=folder))
    assert code == 1 and not out
    assert len(err.strip().splitlines()) == 1, err
    assert "refused" in err and "--format csv > FILE" in err, err
    assert not out_file.exists() and not folder.exists()


def test_sql_refuses_two_statements(capsys, db):
    code, _, err = sql(capsys, db, "SELECT 1; SELECT 2")
    assert code == 1 and "2 statements given: run one statement at a time" in err


READS = [
    "SELECT 1 AS x", "FROM runs", "VALUES (1)", "WITH t AS (SELECT 1 AS x) SELECT * FROM t", "DESCRIBE runs", "SHOW TABLES",
    "SUMMARIZE SELECT 1 AS x", "EXPLAIN SELECT 1", "EXPLAIN ANALYZE SELECT 1", "PRAGMA table_info('runs')",
    "SELECT count(*) FROM read_parquet('{parts}/runs/_empty/runs.parquet')",
]


@pytest.mark.parametrize("statement", READS)
def test_sql_runs_every_form_of_read(capsys, db, statement):
    code, out, err = sql(capsys, db, statement.format(parts=Store(db).parts), "--format", "json")
    assert code == 0, err
    assert isinstance(strict_json(out), list)


def test_sql_help_says_what_it_runs_and_how_to_export(capsys):
    assert main(["sql", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "one read statement" in help_text and "--format csv > FILE" in help_text


def test_the_dashboard_refuses_with_the_same_rule(db):
    from app.dashboard.sandbox import run_query
    from store.read_statement import QueryRefused

    with pytest.raises(QueryRefused, match="EXPLAIN COPY statements are refused: the dashboard's SQL box"):
        run_query(Store(db), "EXPLAIN ANALYZE COPY (SELECT 1) TO '/tmp/observatory-leak.csv'")
