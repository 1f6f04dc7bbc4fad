"""attention_time on a small hand-made trace whose figures are known: nested attention ranges
counted once, attention operators given to the innermost range holding them, the axis and kind
from the module's recorded calls."""
from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from store.analysis import attention

R = "r-test"
EVENT_COLUMNS = ("ph", "cat", "name", "pid", "tid", "ts_us", "dur_us", "self_us", "category")
EVENTS = [
    # the text encoder part: an outer attention range around an inner one (transformers' T5 layer)
    ("X", "user_annotation", "text_encoder", "1", "1", 0, 150, None, None),
    ("X", "user_annotation", "attention::enc.layer", "1", "1", 0, 100, None, None),
    ("X", "user_annotation", "attention::enc.layer.SelfAttention", "1", "1", 10, 50, None, None),
    ("X", "cpu_op", "aten::bmm", "1", "1", 20, 10, 10, "attention"),
    ("X", "cpu_op", "aten::_softmax", "1", "1", 30, 5, 5, "attention"),
    ("X", "cpu_op", "aten::linear", "1", "1", 40, 6, 6, "gemm"),  # a projection: not attention
    ("X", "cpu_op", "aten::add", "1", "1", 70, 4, 4, "attention"),  # in the outer range only
    # the unet part: a temporal and a spatial module, and operators outside attention modules
    ("X", "user_annotation", "unet", "1", "1", 190, 210, None, None),
    ("X", "user_annotation", "attention::unet.temp", "1", "1", 200, 50, None, None),
    ("X", "cpu_op", "aten::scaled_dot_product_attention", "1", "1", 210, 20, 20, "attention"),
    ("X", "user_annotation", "attention::unet.attn", "1", "1", 300, 20, None, None),
    ("X", "cpu_op", "aten::scaled_dot_product_attention", "1", "1", 305, 8, 8, "attention"),
    ("X", "cpu_op", "aten::convolution", "1", "1", 350, 30, 30, "convolution"),
]


@pytest.fixture(scope="module")
def con():
    con = duckdb.connect()
    events = pd.DataFrame(EVENTS, columns=EVENT_COLUMNS)
    events.insert(0, "event_idx", range(len(events)))
    events.insert(0, "rank", pd.Series([None] * len(events), dtype="Int32"))
    events.insert(0, "run_id", R)
    con.register("events_frame", events)
    con.execute("CREATE TABLE events AS SELECT * FROM events_frame")
    con.execute("CREATE TABLE runs AS SELECT 'r-test' AS run_id")
    con.execute("""CREATE TABLE attention_calls AS SELECT * FROM (VALUES
        ('r-test', 'enc.layer.SelfAttention', 'self', NULL), ('r-test', 'unet.temp', 'self', 'temporal'),
        ('r-test', 'unet.attn', 'cross', 'spatial')) AS t(run_id, module_path, kind, axis)""")
    for sql in attention.VIEWS:
        con.execute(sql)
    yield con
    con.close()


def test_attention_time_counts_nested_ranges_once(con):
    rows = attention.attention_time(con, R, side="cpu").set_index("module_path")
    figures = rows[["calls", "time_us", "self_us", "attention_us"]].astype(float).to_dict("index")
    assert figures == {
        "enc.layer": {"calls": 1, "time_us": 100, "self_us": 50, "attention_us": 4},
        "enc.layer.SelfAttention": {"calls": 1, "time_us": 50, "self_us": 50, "attention_us": 15},
        "unet.temp": {"calls": 1, "time_us": 50, "self_us": 50, "attention_us": 20},
        "unet.attn": {"calls": 1, "time_us": 20, "self_us": 20, "attention_us": 8},
    }
    assert rows.loc["unet.temp", "axis"] == "temporal" and rows.loc["unet.attn", "axis"] == "spatial"
    assert pd.isna(rows.loc["enc.layer", "axis"]) and pd.isna(rows.loc["enc.layer", "kind"])
    assert attention.attention_time(con, R, side="device").empty
    with pytest.raises(ValueError, match="side='gpu'"):
        attention.attention_time(con, R, side="gpu")

