"""Studies as data: each published study a TOML file under studies/, its findings judged in SQL.

    name = "multimodal-gen"
    number = "2"
    title = "Multimodal generation inference"
    sweeps = ["sweeps/llm-decode-ladder.toml"]      # the runs it needs (relative to the project)

    [[finding]]
    id = "ladder"
    claim = "Stacking optimizations gives a 3.88x better baseline"
    published = "3.88x (A100)"
    sql = '''SELECT ... AS ours, ... AS holds, [...] AS run_ids'''
    gpu_only = false                               # true: judged only on a GPU
    on_gpu = "..."                                 # what the code measures there (shown on a CPU)
    [finding.figure]                               # optional: the trend, the paper's kind of chart
    sql = "SELECT ..."
    kind = "line"                                  # line | bar | scatter
    x = "frames"; y = "temporal_share_pct"; color = "variant"; log_x = false; log_y = false

A finding's `sql` returns one row: `ours` (our figure, as text), `holds` (BOOLEAN: the rule
for the verdict; NULL when the runs it needs are missing) and `run_ids` (the runs it read).
On a CPU, rules judge orderings and trends, never a GPU's percentages. The SQL runs on a
connection holding only the study's runs, with the helper views of `STUDY_VIEWS`.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

PROJECT = Path(__file__).resolve().parents[2]
STUDIES_DIR = PROJECT / "studies"


def studies_dir() -> Path:
    """Where study files live: $OBSERVATORY_STUDIES (a folder of your own studies) or the project's studies/."""
    return Path(os.environ.get("OBSERVATORY_STUDIES") or STUDIES_DIR)
VERDICTS = ("holds", "differs", "gpu-only", "no data")
CHART_KINDS = ("line", "bar", "scatter")

# Helper views over the study's runs, so findings read as what they compare.
STUDY_VIEWS = [
    # successful profiled runs, with their parameters as JSON
    """CREATE OR REPLACE VIEW study_runs AS
       SELECT run_id, workload, variant, preset, batch, dtype, device, workload_kind, params, settings_key, stored_at
       FROM runs WHERE status = 'ok' AND source = 'profile'""",
    # median latency of each run's iteration, parts and background parts
    """CREATE OR REPLACE VIEW latency_median AS
       SELECT run_id, phase, any_value(role) AS role, median(latency_us) AS median_us,
              median(items_per_s) AS items_per_s, any_value(items) AS items, any_value(item_unit) AS item_unit,
              median(latency_us) / nullif(any_value(items), 0) AS us_per_item
       FROM latency GROUP BY run_id, phase""",
    # each part's share of its run's iteration (medians)
    """CREATE OR REPLACE VIEW part_share AS
       SELECT p.run_id, p.phase AS part, p.median_us, 100 * p.median_us / nullif(i.median_us, 0) AS share_pct
       FROM latency_median p JOIN latency_median i ON i.run_id = p.run_id AND i.phase = 'iteration'
       WHERE p.role IN ('part', 'unmarked')""",
    # a parameter's number (or NULL) and text
    "CREATE OR REPLACE MACRO param(r, n) AS (SELECT any_value(number) FROM params WHERE run_id = r AND name = n)",
    "CREATE OR REPLACE MACRO param_text(r, n) AS (SELECT any_value(value) FROM params WHERE run_id = r AND name = n)",
    # a run's metric value
    "CREATE OR REPLACE MACRO metric(r, n) AS (SELECT any_value(value) FROM metrics WHERE run_id = r AND name = n)",
]


class StudyFileError(ValueError):
    pass


@dataclass(frozen=True)
class Figure:
    sql: str
    kind: str
    x: str
    y: str
    color: str | None = None
    facet: str | None = None
    log_x: bool = False
    log_y: bool = False
    title: str | None = None


@dataclass(frozen=True)
class Finding:
    id: str
    claim: str
    published: str
    sql: str
    gpu_only: bool = False
    on_gpu: str | None = None
    figure: Figure | None = None


@dataclass(frozen=True)
class Study:
    path: Path
    name: str
    number: str
    title: str
    sweeps: tuple[Path, ...]
    findings: tuple[Finding, ...]
    notes: str = ""


def _need(path: Path, table: dict, key: str, kind: type, where: str):
    value = table.get(key)
    if not isinstance(value, kind) or (isinstance(value, str) and not value.strip()):
        raise StudyFileError(f"{path}: {where}{key} must be a {'non-empty ' if kind is str else ''}{kind.__name__}, got {value!r}")
    return value


def load_study(path: Path) -> Study:
    """Read and check one study file; errors name the file and the key."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise StudyFileError(f"{path}: cannot read the study file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise StudyFileError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"name", "number", "title", "sweeps", "finding", "notes"}
    if unknown:
        raise StudyFileError(f"{path}: unknown key {sorted(unknown)[0]!r}; expected name, number, title, sweeps, notes, [[finding]]")
    # a sweep path is relative to the study file's folder, or to the project (sweeps/x.toml)
    sweeps = tuple(Path(path).parent / s if (Path(path).parent / s).is_file() else PROJECT / s for s in _need(path, data, "sweeps", list, ""))
    for sweep in sweeps:
        if not sweep.is_file():
            raise StudyFileError(f"{path}: sweeps: {sweep} does not exist")
    findings, seen = [], set()
    for index, raw in enumerate(_need(path, data, "finding", list, "")):
        where = f"finding {index + 1}: "
        fid = _need(path, raw, "id", str, where)
        if fid in seen:
            raise StudyFileError(f"{path}: {where}id {fid!r} is used twice")
        seen.add(fid)
        figure = raw.get("figure")
        if figure is not None:
            kind = _need(path, figure, "kind", str, where + "figure.")
            if kind not in CHART_KINDS:
                raise StudyFileError(f"{path}: {where}figure.kind {kind!r}; expected one of {', '.join(CHART_KINDS)}")
            figure = Figure(sql=_need(path, figure, "sql", str, where + "figure."), kind=kind, x=_need(path, figure, "x", str, where + "figure."),
                            y=_need(path, figure, "y", str, where + "figure."), color=figure.get("color"), facet=figure.get("facet"),
                            log_x=bool(figure.get("log_x", False)), log_y=bool(figure.get("log_y", False)), title=figure.get("title"))
        findings.append(Finding(
            id=fid, claim=_need(path, raw, "claim", str, where), published=_need(path, raw, "published", str, where),
            sql=_need(path, raw, "sql", str, where), gpu_only=bool(raw.get("gpu_only", False)), on_gpu=raw.get("on_gpu"), figure=figure,
        ))
    return Study(path=Path(path), name=_need(path, data, "name", str, ""), number=str(data.get("number", "")),
                 title=_need(path, data, "title", str, ""), sweeps=sweeps, findings=tuple(findings), notes=data.get("notes", ""))


def all_studies() -> list[Study]:
    """Every study file under studies/, by study number."""
    studies = [load_study(p) for p in sorted(studies_dir().glob("*.toml"))]
    return sorted(studies, key=lambda s: (s.number, s.name))


def get_study(name: str) -> Study:
    from workloads.base import unknown_name

    path = studies_dir() / f"{name}.toml"
    if not path.is_file():
        raise ValueError(unknown_name("study", name, sorted(p.stem for p in studies_dir().glob("*.toml"))))
    return load_study(path)


def add_study_views(con: duckdb.DuckDBPyConnection) -> None:
    for sql in STUDY_VIEWS:
        con.execute(sql)


def judge(con: duckdb.DuckDBPyConnection, finding: Finding, on_gpu: bool) -> dict:
    """One finding: its claim, the published figure, ours, the verdict and the runs it read."""
    try:
        row = con.execute(finding.sql).fetchdf()
    except duckdb.Error as exc:
        raise ValueError(f"finding {finding.id!r}: its SQL failed: {str(exc).splitlines()[0]}") from None
    missing = {"ours", "holds", "run_ids"} - set(row.columns)
    if missing or len(row) > 1:
        raise ValueError(f"finding {finding.id!r}: its SQL must return one row with ours, holds, run_ids (got {len(row)} rows, missing {sorted(missing)})")
    if row.empty:  # a GROUP BY over runs that are not there: nothing to judge
        row = pd.DataFrame({"ours": [None], "holds": [None], "run_ids": [None]})
    ours, holds, run_ids = row["ours"].iloc[0], row["holds"].iloc[0], row["run_ids"].iloc[0]
    run_ids = sorted({str(r) for r in (list(run_ids) if isinstance(run_ids, (list, tuple, np.ndarray)) else []) if r is not None})
    if finding.gpu_only and not on_gpu:
        verdict = "gpu-only"
        ours = f"{ours} on this CPU; on a GPU: {finding.on_gpu}" if pd.notna(ours) and ours is not None else f"on a GPU: {finding.on_gpu}"
    elif holds is None or pd.isna(holds):
        verdict = "no data"
    else:
        verdict = "holds" if bool(holds) else "differs"
    return {"id": finding.id, "claim": finding.claim, "published": finding.published,
            "ours": None if ours is None or (isinstance(ours, float) and pd.isna(ours)) else str(ours),
            "verdict": verdict, "run_ids": run_ids}


def figure_frame(con: duckdb.DuckDBPyConnection, figure: Figure) -> pd.DataFrame:
    try:
        return con.execute(figure.sql).df()
    except duckdb.Error as exc:
        raise ValueError(f"a figure's SQL failed: {str(exc).splitlines()[0]}") from None
