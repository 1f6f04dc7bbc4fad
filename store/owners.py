"""Which process owns a piece of work in the store, and whether it still lives.

A writer's staging folder and a sweep's claim on a grid point carry their owner: the host, the
pid, and the process's start time (field 22 of /proc/<pid>/stat, in clock ticks since boot), so
a pid the kernel has since given to another process is not mistaken for the owner. Only owners
on this host can be judged; one on another host counts as alive. A claim's work may also run in
a batch job (`Job`) that outlives its owner: Slurm's queue says whether it still lives.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
from dataclasses import dataclass
from functools import lru_cache

_TAG = re.compile(r"^(?P<host>[A-Za-z0-9_.\-]+)~(?P<pid>\d+)~(?P<start>\d+)$")


def _start_ticks(pid: int) -> int | None:
    """The process's start time, or None when no live process has that pid (a zombie does nothing any more)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its closing one
    state, *fields = stat[stat.rindex(b")") + 2 :].split()
    return None if state in (b"Z", b"X") else int(fields[18])  # field 22; `state` is field 3


@lru_cache(maxsize=1)
def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", socket.gethostname()) or "host"


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    start: int

    @classmethod
    def current(cls) -> "Owner":
        return cls.of(os.getpid())

    @classmethod
    def of(cls, pid: int) -> "Owner":
        """The process `pid` on this host."""
        return cls(_host(), pid, _start_ticks(pid) or 0)

    @classmethod
    def parse(cls, tag: str) -> "Owner | None":
        """The owner a tag names, or None when `tag` is not one."""
        match = _TAG.match(tag)
        return cls(match["host"], int(match["pid"]), int(match["start"])) if match else None

    @property
    def tag(self) -> str:
        """A file-name-safe text naming this owner (`Owner.parse` reads it back)."""
        return f"{self.host}~{self.pid}~{self.start}"

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"

    def is_alive(self) -> bool:
        if self.host != _host():
            return True  # cannot be judged from here
        return _start_ticks(self.pid) == self.start


@dataclass(frozen=True)
class Job:
    """A batch job that does claimed work and may outlive the process that claimed it: a Slurm
    job, judged by Slurm's queue, or a job of submitit's local executor, judged by its process."""
    scheduler: str  # "slurm" or "local"
    job_id: str
    process: Owner | None = None  # a local job's own process

    def __str__(self) -> str:
        return f"{self.scheduler} job {self.job_id}"

    def is_alive(self) -> bool:
        if self.process is not None:
            return self.process.is_alive()
        return _in_slurm_queue(self.job_id)


def _in_slurm_queue(job_id: str) -> bool:
    """Whether Slurm still has the job pending or running; True when Slurm cannot be asked from here."""
    try:
        done = subprocess.run(["squeue", "--noheader", "--jobs", job_id, "--format", "%T"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return True  # cannot be judged from here
    if done.returncode != 0:
        return "invalid job id" not in done.stderr.lower()  # squeue's answer for a job that has left the queue
    return bool(done.stdout.strip())
