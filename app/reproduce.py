"""`observatory reproduce STUDY`: a study's runs (reused when the store has them), then its findings
beside the published ones, each with a verdict.

    observatory reproduce multimodal-gen [--preset tiny|paper] [--device cpu|cuda] [--fresh] [--format json]
    observatory reproduce --all
    observatory reproduce --list
"""
from __future__ import annotations

import argparse

import pandas as pd

from app.context import EXIT_OK, open_store
from app.output import console, err_console, print_frame, print_json
from store.analysis.studies import Study, add_study_views, all_studies, get_study, judge
from store.db import Store


def match_runs(runs: pd.DataFrame, points) -> dict[str, str]:
    """{sweep key: the latest successful run with the point's workload, variant and settings} among `runs`."""
    ok = runs[(runs["status"] == "ok") & runs["settings_key"].notna()].sort_values(["stored_at", "run_id"])
    latest = {(r.workload, r.variant, r.settings_key): r.run_id for r in ok.itertuples()}
    found = {}
    for point in points:
        spec = point.request.spec()
        run_id = latest.get((point.request.workload, spec.variant, spec.settings_key()))
        if run_id is not None:
            found[point.key] = run_id
    return found


def study_points(study: Study, preset: str, device: str) -> list:
    """Every grid point of the study's sweeps at this preset and device."""
    from app.sweep import load_sweep

    return [point for path in study.sweeps for point in load_sweep(path, preset=preset, device=device).runs]


def collect_runs(store: Store, study: Study, preset: str, device: str, fresh: bool, executor: str) -> list[str]:
    """The study's run ids: reused, or run now (through the sweep executor, which claims each point)."""
    from app.sweep import load_sweep, run_point
    from store import summaries

    run_ids = []
    for path in study.sweeps:
        sweep = load_sweep(path, preset=preset, device=device)
        reused = {} if fresh or not store.exists() else match_runs(summaries.runs_table(store).to_pandas(), sweep.runs)
        missing = [p for p in sweep.runs if p.key not in reused]
        err_console.print(f"{study.name}: {path.name}: {len(sweep.runs)} runs, {len(reused)} reused from the store, {len(missing)} to run", highlight=False)
        run_ids += list(reused.values())
        for point in missing:
            outcome = run_point(point, sweep, store, retry_failed=True, executor=executor, force=True)
            if outcome.status == "ok":
                run_ids.append(outcome.detail)
            else:
                err_console.print(f"  {outcome.status}: {point.label}: {outcome.detail}", markup=False, highlight=False)
    return run_ids


def evaluate(store: Store, study: Study, run_ids: list[str], on_gpu: bool) -> list[dict]:
    with store.connect_runs(run_ids) as con:
        add_study_views(con)
        return [judge(con, finding, on_gpu) for finding in study.findings]


def reproduce(store: Store, study: Study, preset: str, device: str, fresh: bool = False, executor: str = "inline") -> dict:
    """The study's document: {"study", "preset", "device", "findings": [...]}."""
    run_ids = collect_runs(store, study, preset, device, fresh, executor)
    findings = evaluate(store, study, run_ids, on_gpu=device.startswith("cuda"))
    return {"study": study.name, "title": study.title, "preset": preset, "device": device, "findings": findings}


def cmd_reproduce(args: argparse.Namespace) -> int:
    from workloads.base import check_device

    if args.list:
        frame = pd.DataFrame([{"study": s.name, "number": s.number, "title": s.title, "findings": len(s.findings)} for s in all_studies()])
        print_frame(frame, args.format, title="studies (`observatory reproduce STUDY`)")
        return EXIT_OK
    if bool(args.all) == bool(args.study):
        raise ValueError("give one STUDY or --all (see --list)")
    device = check_device(args.device)
    studies = all_studies() if args.all else [get_study(args.study)]
    store = open_store(args).ensure()
    documents = [reproduce(store, study, args.preset, device, args.fresh, args.executor) for study in studies]
    if args.format == "json":
        print_json(documents if args.all else documents[0])
        return EXIT_OK
    for document in documents:
        console.rule(f"{document['study']}: {document['title']} ({document['preset']} on {document['device']})")
        frame = pd.DataFrame(document["findings"])[["id", "claim", "published", "ours", "verdict"]]
        print_frame(frame, title=None)
    return EXIT_OK
