"""Where a sweep's runs execute: the executors' names and the cluster options, nothing heavy.

Local executors run one point at a time on this machine (app/sweep.py: `process`, `inline`);
cluster executors hand every point to a scheduler at once and collect the results as they
come (app/executors/cluster.py: `ray` through app/executors/ray_executor.py, `slurm` through
submitit in app/executors/slurm_executor.py). Ray and submitit are imported only when their
executor is chosen; this module is imported by the command line's parser, so it stays light.
"""
from __future__ import annotations

from dataclasses import dataclass

LOCAL_EXECUTORS = ("process", "inline")
CLUSTER_EXECUTORS = ("ray", "slurm")
EXECUTORS = LOCAL_EXECUTORS + CLUSTER_EXECUTORS
SLURM_CLUSTERS = ("slurm", "local")  # local: submitit's local executor, every run a job on this machine
DEFAULT_TIME_MIN = 60  # a Slurm job's time limit when neither --time-min nor [run] timeout_s sets one


@dataclass(frozen=True)
class ClusterOptions:
    """What a cluster executor asks for each run; None means the option was not given."""
    address: str | None = None  # ray: a running cluster's address (default: start a local one)
    partition: str | None = None  # slurm
    time_min: int | None = None  # slurm: each job's time limit in minutes
    cpus_per_run: int | None = None  # default 1
    gpus_per_run: int | None = None  # default: 1 for device cuda, else 0
    slurm_cluster: str | None = None  # "slurm" (default) or "local"

    def cpus(self) -> int:
        return self.cpus_per_run or 1

    def gpus(self, device: str) -> int:
        """The GPUs one run asks for: the rule for every cluster executor."""
        if self.gpus_per_run is not None:
            return self.gpus_per_run
        return 1 if device.startswith("cuda") else 0

    def check(self, executor: str, device: str) -> None:
        """Refuse options the executor does not use (no silent no-op), naming the option."""
        only = {"--address": ("ray", self.address), "--partition": ("slurm", self.partition), "--time-min": ("slurm", self.time_min),
                "--slurm-cluster": ("slurm", self.slurm_cluster), "--cpus-per-run": (CLUSTER_EXECUTORS, self.cpus_per_run),
                "--gpus-per-run": (CLUSTER_EXECUTORS, self.gpus_per_run)}
        for flag, (executors, value) in only.items():
            if value is not None and executor not in executors:
                wanted = " or ".join(f"--executor {e}" for e in ((executors,) if isinstance(executors, str) else executors))
                raise ValueError(f"{flag} applies to {wanted} only, not --executor {executor}")
        for flag, value, least in (("--cpus-per-run", self.cpus_per_run, 1), ("--gpus-per-run", self.gpus_per_run, 0),
                                   ("--time-min", self.time_min, 1)):
            if value is not None and value < least:
                raise ValueError(f"{flag} must be at least {least}, got {value}")
        if self.slurm_cluster is not None and self.slurm_cluster not in SLURM_CLUSTERS:
            raise ValueError(f"--slurm-cluster must be one of {', '.join(SLURM_CLUSTERS)}, got {self.slurm_cluster!r}")
        if executor in CLUSTER_EXECUTORS and device.startswith("cuda") and self.gpus(device) == 0:
            raise ValueError(f"--gpus-per-run 0: the sweep's runs are on device {device}, which needs at least one GPU per run")
