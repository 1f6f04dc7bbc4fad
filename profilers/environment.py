"""The environment a run was measured in: versions, device, host, and the code's git sha."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch

from profilers.nvml import driver_version
from profilers.timing import is_cuda

REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass  # not Linux: platform.processor() below
    return platform.processor() or platform.machine()


def git_sha(repo: Path = REPO) -> str | None:
    """`git rev-parse HEAD` (read-only); None outside a repository or before its first commit."""
    try:
        done = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", "HEAD"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    sha = done.stdout.strip()
    return sha if done.returncode == 0 and sha else None


def collect(device: str, nvml: Any = None) -> dict[str, Any]:
    cuda = is_cuda(device)
    return {
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "driver_version": driver_version(nvml),
        "device": device,
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu_model(),
        "cpu_model": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),  # read by OpenMP when torch loaded
        "host": socket.gethostname(),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "git_sha": git_sha(),
    }
