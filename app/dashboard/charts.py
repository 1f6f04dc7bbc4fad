"""The dashboard's figures: Plotly Express over the frames data.py returns; no reading, no Streamlit."""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from store.analysis.categories import CATEGORIES

CATEGORY_COLORS = dict(zip(CATEGORIES, [
    "#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac",
]))
GAP_COLORS = {"kernel": "#4c78a8", "host wait": "#e45756", "kernel wait": "#eeca3b", "other idle": "#bab0ac"}
TEMPORAL_COLORS = {"compute": "#54a24b", "non-compute": "#f58518", "idle": "#bab0ac"}
IDLE_COLORS = {"host wait": "#e45756", "kernel wait": "#eeca3b", "other": "#bab0ac"}


def _tidy(fig: go.Figure, height: int | None = None) -> go.Figure:
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1]))  # facet titles: the value only
    fig.update_layout(margin=dict(l=10, r=10, t=40, b=10), legend_title_text="", height=height)
    return fig


def category_bars(frame: pd.DataFrame, value: str, facets: list[str]) -> go.Figure:
    """Stacked operator time per run: one bar per run, categories stacked, a panel per workload (or import label)."""
    wrap = min(2, len(facets))
    fig = px.bar(
        frame, x="name", y=value, color="category", facet_col="facet", facet_col_wrap=wrap,
        category_orders={"category": list(CATEGORIES), "facet": facets}, color_discrete_map=CATEGORY_COLORS,
        hover_data={"group": True, "run_id": True, "time_ms": ":.3f", "share_pct": ":.1f", "count": True, "name": False, "facet": False},
        labels={"share_pct": "share of time (%)", "time_ms": "time (ms)", "name": ""},
        facet_col_spacing=0.06, facet_row_spacing=0.12,
    )
    fig.update_xaxes(matches=None, showticklabels=True, tickangle=-45)
    fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.04, xanchor="left", x=0))
    rows = -(-len(facets) // max(wrap, 1))
    return _tidy(fig, height=120 + 460 * rows).update_layout(margin_t=90)


def top_bar(frame: pd.DataFrame, x: str, label: str, title: str) -> go.Figure:
    """A horizontal bar per kernel or operator name, largest on top, colored by category."""
    shown = frame.assign(short=frame["name"].str.slice(0, 60))
    fig = px.bar(
        shown.iloc[::-1], x=x, y="short", color="category", orientation="h", color_discrete_map=CATEGORY_COLORS,
        hover_name="name", labels={x: label, "short": ""}, title=title,
    )
    fig.update_yaxes(categoryorder="array", categoryarray=list(shown["short"].iloc[::-1]))
    return _tidy(fig, height=max(300, 24 * len(shown) + 80))


def latency_bars(stats: pd.DataFrame) -> go.Figure:
    """Median latency per run and phase, whiskers from p10 to p90; a panel per phase (own scale)."""
    frame = stats.assign(
        median_ms=stats["median_us"] / 1e3, plus=(stats["p90_us"] - stats["median_us"]) / 1e3,
        minus=(stats["median_us"] - stats["p10_us"]) / 1e3,
    )
    fig = px.bar(
        frame, x="label", y="median_ms", color="label", error_y="plus", error_y_minus="minus", facet_col="phase",
        labels={"median_ms": "median latency (ms)", "label": ""}, hover_data={"repeats": True, "p10_us": ":.0f", "p90_us": ":.0f"},
    )
    fig.update_yaxes(matches=None, showticklabels=True)
    fig.update_layout(showlegend=False)
    return _tidy(fig, height=360)


def throughput_box(repeats: pd.DataFrame) -> go.Figure:
    """Throughput of every timed repeat, per run and phase: the spread itself, not a summary of it."""
    unit = repeats["item_unit"].dropna().iloc[0] if repeats["item_unit"].notna().any() else "items"
    fig = px.box(
        repeats, x="label", y="items_per_s", color="label", facet_col="phase", points="all",
        labels={"items_per_s": f"{unit} / s", "label": ""},
    )
    fig.update_yaxes(matches=None, showticklabels=True)
    fig.update_layout(showlegend=False)
    return _tidy(fig, height=360)


def shift_bars(shift: pd.DataFrame) -> go.Figure:
    """Change of each category's share of time, variant vs baseline, a panel per side (cpu, device)."""
    fig = px.bar(
        shift, x="delta_share_pct", y="category", color="variant", barmode="group", facet_col="side", orientation="h",
        labels={"delta_share_pct": "change of share (percentage points)", "category": ""},
        hover_data={"baseline_time_us": ":.0f", "time_us": ":.0f", "delta_us": ":.0f"},
    )
    fig.update_xaxes(matches=None)
    return _tidy(fig, height=max(320, 28 * shift["category"].nunique() + 120))


def lengths_by_module(calls: pd.DataFrame) -> go.Figure:
    """q_len and kv_len of every call, per module: where each length occurs and how often."""
    long = calls.melt(id_vars=["module", "kind", "model_call"], value_vars=["q_len", "kv_len"], var_name="length", value_name="tokens")
    fig = px.strip(long, x="tokens", y="module", color="length", hover_data=["kind", "model_call"], labels={"module": ""})
    return _tidy(fig, height=max(260, 30 * long["module"].nunique() + 100))


def calls_by_level(levels: pd.DataFrame) -> go.Figure:
    """Attention calls per UNet level (or transformer layer), by kind, with their query length."""
    text = "q " + levels["q_len"].astype(str) + " / kv " + levels["kv_len"].astype(str)
    fig = px.bar(
        levels.assign(lengths=text), x="level", y="calls", color="kind", barmode="group", text="lengths",
        hover_data=["q_len", "kv_len"], labels={"level": "", "calls": "attention calls"},
    )
    return _tidy(fig, height=340)


def lengths_by_step(steps: pd.DataFrame) -> go.Figure:
    """Mean q_len and kv_len per model call (denoising step or generated token), by kind."""
    long = steps.melt(id_vars=["model_call", "kind"], value_vars=["q_len", "kv_len"], var_name="length", value_name="tokens")
    fig = px.line(long, x="model_call", y="tokens", color="kind", line_dash="length", markers=True, labels={"tokens": "mean tokens"})
    return _tidy(fig, height=340)


def share_pie(frame: pd.DataFrame, names: str, values: str, title: str) -> go.Figure:
    return _tidy(px.pie(frame, names=names, values=values, title=title, hole=0.45), height=320)


def temporal_bars(frame: pd.DataFrame) -> go.Figure:
    """Idle, compute and non-compute share of the kernel span, one bar per rank."""
    long = frame.melt(id_vars=["label"], value_vars=["compute_pct", "non_compute_pct", "idle_pct"], var_name="time", value_name="pct")
    long["time"] = long["time"].str.replace("_pct", "").str.replace("_", "-")
    fig = px.bar(long, x="label", y="pct", color="time", color_discrete_map=TEMPORAL_COLORS, labels={"pct": "% of kernel span", "label": ""})
    return _tidy(fig, height=340)


def idle_bars(frame: pd.DataFrame) -> go.Figure:
    """Idle time per rank and stream, split by cause (host wait, kernel wait, other)."""
    long = frame.melt(id_vars=["label"], value_vars=["host_wait_us", "kernel_wait_us", "other_us"], var_name="cause", value_name="us")
    long["cause"] = long["cause"].str.replace("_us", "").str.replace("_", " ")
    long["ms"] = long["us"] / 1e3
    fig = px.bar(long, x="label", y="ms", color="cause", color_discrete_map=IDLE_COLORS, labels={"ms": "idle time (ms)", "label": ""})
    return _tidy(fig, height=340)


def timeline(spans: pd.DataFrame) -> go.Figure:
    """Kernels per stream as bars on a time axis, and the idle gaps between them colored by cause."""
    fig = px.bar(
        spans, base="start_ms", x="dur_ms", y="stream", color="what", orientation="h", hover_name="name",
        color_discrete_map=GAP_COLORS, category_orders={"what": list(GAP_COLORS)},
        hover_data={"start_ms": ":.3f", "dur_ms": ":.3f", "stream": False, "what": False},
        labels={"dur_ms": "time since window start (ms)", "stream": ""},
    )
    fig.update_traces(marker_line_width=0)
    fig.update_layout(barmode="overlay", bargap=0.25)
    return _tidy(fig, height=max(220, 60 * spans["stream"].nunique() + 120))


def telemetry_lines(samples: pd.DataFrame) -> go.Figure:
    """NVML samples over time: one panel per quantity, one line per GPU."""
    fig = px.line(samples, x="time_s", y="value", color="gpu", facet_row="quantity", labels={"time_s": "time (s)", "value": ""})
    fig.update_yaxes(matches=None, showticklabels=True)
    return _tidy(fig, height=160 * samples["quantity"].nunique() + 80)


def finding_chart(frame: pd.DataFrame, figure) -> go.Figure:
    """A study finding's trend in the paper's kind of chart (store.analysis.studies.Figure says which)."""
    draw = {"line": px.line, "bar": px.bar, "scatter": px.scatter}[figure.kind]
    options = {"x": figure.x, "y": figure.y, "log_x": figure.log_x, "log_y": figure.log_y}
    options.update({key: value for key, value in (("color", figure.color), ("facet_col", figure.facet), ("title", figure.title)) if value})
    options.update({"line": {"markers": True}, "bar": {"barmode": "group"}}.get(figure.kind, {}))
    fig = draw(frame, **options)
    return _tidy(fig, height=360)


def part_bars(frame: pd.DataFrame) -> go.Figure:
    """Operator time per part of the iteration, categories stacked: where each part's time goes."""
    fig = px.bar(frame, x="part", y="time_ms", color="category", category_orders={"category": list(CATEGORIES)},
                 color_discrete_map=CATEGORY_COLORS, labels={"time_ms": "operator time (ms)", "part": ""},
                 hover_data={"share_pct": ":.1f", "count": True})
    return _tidy(fig, height=340)
