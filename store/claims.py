"""Claims: work being done is claimed by its owner, so no two processes do it at once.

A claim is a small JSON file naming its owner (store/owners.py: host, pid, and the process's
start time, so that a pid the system has given to another process since is not taken for the
owner). Claims in a folder are read and written
under an flock on the folder's `.lock`, held only for that moment:

- no claim file: the caller writes its own and owns the work;
- a claim whose owner is alive: left alone, the caller does not own the work;
- a claim whose owner is gone (on this host: no such pid, a zombie, or another process under
  that pid): the caller takes it over. An owner on another host is taken for alive: this
  machine cannot tell (Linux's /proc is what tells here);
- a claim whose owner handed the work to a batch job (`hand_to_job`: a Slurm job outlives the
  sweep that submitted it) stays held while that job lives, even after its owner is gone.

Releasing removes the claim file if it is still the caller's.
"""
from __future__ import annotations

import fcntl
import json
import os
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from store.owners import Job, Owner

LOCK_FILE = ".lock"


@dataclass(frozen=True)
class Claim:
    path: Path
    owner: Owner  # who holds the claim now
    ours: bool
    taken_from: Owner | None = None  # the gone owner whose claim this one replaced
    job: Job | None = None  # the batch job its owner handed the work to

    def holder(self) -> str:
        """Who is doing the work, for a message."""
        if self.job is None or self.owner.is_alive():
            return str(self.owner)
        return f"{self.job} (its sweep, {self.owner}, is gone)"


def claim(folder: Path, name: str) -> Claim:
    """Claim `name` in `folder` for this process, unless a live owner holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    me = Owner.current()
    with _locked(folder):
        holder, job = _read_claim(path)
        if holder is not None and (holder.is_alive() or (job is not None and job.is_alive())):
            return Claim(path, holder, ours=holder == me, job=job)
        _write_claim(path, me)
    return Claim(path, me, ours=True, taken_from=holder)


def hand_to_job(held: Claim, job: Job) -> Claim:
    """Record that the claimed work runs in `job`: the claim then holds while the job lives, even if its owner dies."""
    with _locked(held.path.parent):
        if _read_claim(held.path)[0] != held.owner:
            raise ValueError(f"{held.path}: the claim is no longer held by {held.owner}")
        _write_claim(held.path, held.owner, job)
    return Claim(held.path, held.owner, held.ours, held.taken_from, job)


def release(held: Claim) -> None:
    """Remove the claim, if it is ours and still ours."""
    if not held.ours:
        return
    with _locked(held.path.parent):
        if _read_claim(held.path)[0] == held.owner:
            held.path.unlink()


@contextmanager
def _locked(folder: Path):
    with open(folder / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when its process dies
        yield


def _read_claim(path: Path) -> tuple[Owner | None, Job | None]:
    try:
        data = json.loads(path.read_text())
        job = data.pop("job", None)
        if job is not None:
            process = job.pop("process", None)
            job = Job(**job, process=Owner(**process) if process else None)
        return Owner(**data), job
    except FileNotFoundError:
        return None, None
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a claim file ({exc}); delete it if no sweep is running") from None


def _write_claim(path: Path, owner: Owner, job: Job | None = None) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps({**asdict(owner), **({"job": asdict(job)} if job else {})}))
    os.replace(tmp, path)
