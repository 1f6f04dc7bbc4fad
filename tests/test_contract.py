"""The workload contract, for every adapter in the registry: no test here names a workload.

Adding an adapter to workloads.ADAPTERS runs it through all of these at its tiny preset:
parameters parse and are checked, every variant builds and runs an iteration, parts are timed
inside the timed repeat and sum to it, attention calls are recorded with a kind, training
iterations repeat without drift, numerics give finite figures, and the baseline goes through
the whole runner into a real store that every reader can read.
"""
from __future__ import annotations

import dataclasses
import math
import time

import pytest
import torch

from profilers.parts import UNMARKED, untimed_part
from profilers.seqlen import SeqLenRecorder
from profilers.timing import make_clock, time_repeats
from workloads.base import RunOptions, all_workloads

WORKLOADS = all_workloads()
CPU_VARIANTS = [
    pytest.param(w, v, id=f"{w.name}-{v}", marks=[pytest.mark.slow] if "compile" in v or v == "int8-weights" else [])
    for w in WORKLOADS for v in w.variants if v not in w.gpu_variants
]
_BUILT: dict[tuple, object] = {}


def built(workload, variant: str):
    """Build once per (workload, variant) for the whole module; the first iteration (warm-up) done."""
    key = (workload.name, variant)
    if key not in _BUILT:
        spec = workload.resolve(RunOptions(variant=variant))
        b = workload.build(spec)
        if b.reset is not None:
            b.reset()
        b.iteration(untimed_part)
        _BUILT[key] = (spec, b)
    return _BUILT[key]


# -- parameters ------------------------------------------------------------------------------------
@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w.name)
def test_parameters_parse_from_text_and_name_the_knob(workload):
    for preset, defaults in workload.presets.items():
        as_text = {name: str(value).lower() if isinstance(value, bool) else str(value) for name, value in defaults.as_dict().items()}
        assert workload.params(preset, as_text) == defaults, "every default survives the command line's text form"
    with pytest.raises(ValueError, match=r"--param no_such_knob: .* has no such parameter"):
        workload.params("tiny", {"no_such_knob": "1"})
    for field in dataclasses.fields(workload.params_type):
        if field.type in (int, float, "int", "float"):
            with pytest.raises(ValueError, match=f"--param {field.name}"):
                workload.params("tiny", {field.name: "not-a-number"})


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w.name)
def test_settings_key_changes_with_every_parameter_but_not_the_variant(workload):
    base = workload.resolve(RunOptions())
    changed = 0
    for name, value in base.params.as_dict().items():
        other = (not value) if isinstance(value, bool) else value * 2 if isinstance(value, (int, float)) else None
        try:
            spec = workload.resolve(RunOptions(params={name: other})) if other is not None else None
        except ValueError:  # out of range: the check names the knob instead
            continue
        if spec is not None:
            assert spec.settings_key() != base.settings_key(), name
            changed += 1
    assert changed or not base.params.as_dict()
    others = {workload.resolve(RunOptions(variant=v)).settings_key() for v in workload.variants if v not in workload.gpu_variants}
    assert others == {base.settings_key()}


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w.name)
def test_unknown_variant_and_preset_get_close_matches(workload):
    with pytest.raises(ValueError, match=f"unknown variant '{workload.baseline}x'; did you mean {workload.baseline}"):
        workload.resolve(RunOptions(variant=workload.baseline + "x"))
    with pytest.raises(ValueError, match="unknown preset 'tiyn'; did you mean tiny"):
        workload.resolve(RunOptions(preset="tiyn"))


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w.name)
def test_paper_preset_builds_its_settings(workload):
    spec = workload.resolve(RunOptions(preset="paper"))
    assert spec.params == workload.presets["paper"] and spec.params != workload.presets["tiny"]


# -- every variant: an iteration, its parts, its attention --------------------------------------------
@pytest.mark.parametrize("workload,variant", CPU_VARIANTS)
def test_iteration_runs_and_reports_its_size(workload, variant):
    spec, b = built(workload, variant)
    assert b.items > 0 and b.item_unit
    assert b.info.get("param_count", 0) > 0
    assert (b.reset is not None) == (workload.kind == "training")
    assert b.numerics is not None or workload.kind != "numerics", "a numerics workload's figures are its result"


@pytest.mark.parametrize("workload,variant", CPU_VARIANTS)
def test_parts_are_timed_inside_the_repeat_and_sum_to_it(workload, variant):
    _, b = built(workload, variant)
    rows = time_repeats(b, 1, make_clock("cpu"))
    whole = next(r["latency_us"] for r in rows if r["phase"] == "iteration")
    in_sum = [r for r in rows if r["role"] in ("part", "unmarked")]
    parts = [r["phase"] for r in in_sum if r["phase"] != UNMARKED]
    assert parts, "an iteration marks its parts"
    assert 0 <= whole - sum(r["latency_us"] for r in in_sum) < 100, "only the timer's clock reads lie outside the parts"
    unmarked = next(r["latency_us"] for r in in_sum if r["phase"] == UNMARKED)
    assert unmarked < 0.25 * whole, f"most of the iteration lies in named parts ({unmarked:.0f} of {whole:.0f} us unmarked)"


@pytest.mark.parametrize("workload,variant", CPU_VARIANTS)
def test_attention_calls_are_recorded_with_a_kind(workload, variant):
    _, b = built(workload, variant)
    with SeqLenRecorder(b.recorded_modules or b.model, model=b.model, rules=b.attention_sites) as recorder:
        if b.reset is not None:
            b.reset()
        b.iteration(untimed_part)
    rows = recorder.rows
    if not rows:
        pytest.skip(f"{workload.name} {variant} has no attention")
    assert all(r["kind"] for r in rows), {r["module_path"] for r in rows if not r["kind"]}
    assert all(r["q_len"] and r["kv_len"] for r in rows)
    if b.model is not None and any(r["module_path"] for r in rows):
        assert any(r["model_call"] is not None for r in rows), "calls inside the model's forwards count its calls"


@pytest.mark.parametrize("workload", [w for w in WORKLOADS if w.kind == "training"], ids=lambda w: w.name)
def test_training_repeats_without_drift(workload):
    _, b = built(workload, workload.baseline)
    model = b.model
    outputs = []
    for _ in range(2):
        b.reset()
        b.iteration(untimed_part)
        outputs.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    b.reset()
    restored = model.state_dict()
    assert all(torch.equal(outputs[0][k], outputs[1][k]) for k in outputs[0]), "two reset iterations train to the same weights"
    assert any(not torch.equal(outputs[0][k], restored[k]) for k in restored), "an iteration changes the weights; reset restores them"
    for name in ("trainable_param_count", "optimizer_state_bytes"):
        assert b.info.get(name, 0) > 0, name


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w.name)
def test_numerics_give_finite_figures(workload):
    _, b = built(workload, workload.baseline)
    if b.numerics is None:
        pytest.skip(f"{workload.name} reports no figures besides time")
    rows = b.numerics()
    assert rows and all(set(r) >= {"subject", "metric", "value"} for r in rows)
    assert all(math.isfinite(r["value"]) for r in rows)


# -- the whole path: runner, store, readers ----------------------------------------------------------
@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w.name)
def test_baseline_run_is_stored_and_every_reader_reads_it(workload, tmp_path):
    from app.runner import RunRequest, execute
    from readers import check_run_readers
    from store.db import Store

    store = Store(tmp_path / "o.duckdb")
    started = time.perf_counter()
    run_id = execute(store, RunRequest(workload.name, RunOptions(), repeats=1, warmup=0, active_iterations=1))
    check_run_readers(store, run_id)
    with store.connect_runs([run_id]) as con:
        kind, params, key = con.execute("SELECT workload_kind, params, settings_key FROM runs").fetchone()
        stored = dict(con.execute("SELECT name, value FROM params").fetchall())
        phases = {r[0] for r in con.execute("SELECT DISTINCT phase FROM latency").fetchall()}
        numerics = con.execute("SELECT count(*) FROM numerics").fetchone()[0]
    assert kind == workload.kind and key == workload.resolve(RunOptions()).settings_key()
    assert set(stored) == set(workload.param_names)
    assert "iteration" in phases and len(phases) > 2
    assert numerics > 0 or workload.kind != "numerics"
    assert time.perf_counter() - started < 120, "a tiny run takes seconds"
