"""`observatory reproduce` of every study at --preset tiny on a fresh store, against the time budgets.

Each study is reproduced from nothing (a new store, every run made now), one after another in
one process, as `observatory reproduce --all --preset tiny` does; the time of each and the sums
per budget are printed beside the budget as a ratio (under 1.0 meets it):

    issue 8:  multimodal-gen, flash-stability, dynamar                 under 5 minutes together
    issue 9:  genai-suite, swiftdiffusion, chai                         under 6 minutes together
    issue 10: all nine studies                                         under 10 minutes

    .venv/bin/python bench/bench_reproduce.py [--studies a,b,...] [--out bench/out/reproduce.duckdb]
"""
from __future__ import annotations

import argparse
import io
import shutil
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUDGETS = {  # name: (studies, seconds)
    "issue 8 (three studies)": (("multimodal-gen", "flash-stability", "dynamar"), 300),
    "issue 9 (its studies)": (("genai-suite", "swiftdiffusion", "chai"), 360),
    "issue 10 (all nine)": (None, 600),
}


def main() -> None:
    from app.reproduce import reproduce
    from store.analysis.studies import all_studies
    from store.db import Store

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", help="comma-separated study names (default: every study file)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "reproduce.duckdb")
    args = parser.parse_args()
    studies = all_studies()
    if args.studies:
        wanted = args.studies.split(",")
        studies = [s for s in studies if s.name in wanted]
    shutil.rmtree(args.out.with_suffix(".parts"), ignore_errors=True)
    args.out.unlink(missing_ok=True)
    store = Store(args.out)
    seconds, verdicts = {}, {}
    for study in studies:
        started = time.perf_counter()
        with redirect_stdout(io.StringIO()):
            document = reproduce(store, study, "tiny", "cpu", fresh=True)
        seconds[study.name] = time.perf_counter() - started
        verdicts[study.name] = [f["verdict"] for f in document["findings"]]
        print(f"{study.name:<18}{seconds[study.name]:>8.1f} s   {' '.join(verdicts[study.name])}", flush=True)
    print(f"\n{'budget':<28}{'studies':>8}{'seconds':>10}{'budget_s':>10}{'ratio':>8}")
    for name, (members, budget) in BUDGETS.items():
        members = [s for s in (members or seconds) if s in seconds]
        total = sum(seconds[s] for s in members)
        print(f"{name:<28}{len(members):>8}{total:>10.1f}{budget:>10}{total / budget:>8.2f}")


if __name__ == "__main__":
    main()
