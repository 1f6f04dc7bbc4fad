"""The README's set-up: the main job's set-up installs nothing on the system; only the test command's
set-up adds the browser the dashboard's browser tests need."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(os.geteuid() != 0, reason="the browser is installed only by root")
@pytest.mark.parametrize("argument, installs", [("--no-run", False), ("--for-tests", True)])
def test_only_the_test_setup_installs_a_browser(tmp_path, argument, installs):
    log = tmp_path / "apt-get.log"
    fake = tmp_path / "bin" / "apt-get"  # records what would have been installed, installs nothing
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "OBSERVATORY_CHROMIUM": str(tmp_path / "no-chromium")}
    done = subprocess.run([str(ROOT / "setup.sh"), argument], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines() if log.exists() else []
    assert (any("install" in c and "chromium" in c for c in calls)) == installs, calls
