"""Measurement: timing, traces, memory, GPU telemetry and attention sequence lengths.

`profile(built, config)` runs one session over a built workload (see session.py);
`SeqLenRecorder` and `NvmlSampler` are usable on their own.
"""
from profilers.nvml import NvmlSampler
from profilers.seqlen import SeqLenRecorder
from profilers.session import ProfileConfig, ProfileResult, profile

__all__ = ["NvmlSampler", "ProfileConfig", "ProfileResult", "SeqLenRecorder", "profile"]
