"""profilers: one real session on a tiny module, plus the NVML sampler, timing and memory parts."""
from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from profilers import NvmlSampler, ProfileConfig, profile
from profilers.environment import git_sha
from profilers.memory import PeakRss, model_metrics
from profilers.nvml import ROW_COLUMNS as TELEMETRY_COLUMNS
from profilers.timing import LATENCY_COLUMNS, make_clock, time_repeats
from workloads.base import Built

REPEATS = 3


class _TinyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(32, 32)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)

    def forward(self, x):
        h = self.proj(x)
        return self.attn(h, h, h, need_weights=False)[0]


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    torch.manual_seed(0)
    model = _TinyModel().eval()
    x = torch.randn(4, 12, 32)

    def iteration(part):
        with torch.no_grad():
            with part("project"):
                h = model.proj(x)
            with part("attend"):
                return model.attn(h, h, h, need_weights=False)[0]

    built = Built(iteration=iteration, items=4, item_unit="samples", model=model.attn, recorded_modules={"tiny": model}, part_items={"project": 4},
                  info={"kv_cache_bytes": 0})
    logdir = tmp_path_factory.mktemp("tb") / "run"
    config = ProfileConfig(logdir=logdir, worker_name="tiny", timed_repeats=REPEATS, warmup_iterations=2)
    return built, config, profile(built, config)


def test_trace_lands_in_tensorboard_layout_and_parses(session):
    _, config, result = session
    assert result.trace_path.parent == config.logdir
    assert result.trace_path.name.startswith("tiny.") and result.trace_path.name.endswith(".pt.trace.json.gz")
    trace = json.loads(gzip.decompress(result.trace_path.read_bytes()))
    events = trace["traceEvents"]
    assert any(e.get("cat") == "cpu_op" for e in events)
    steps = {e["name"] for e in events if e.get("name", "").startswith("ProfilerStep#")}
    assert len(steps) == config.active_iterations
    assert {"project", "attend"} <= {e["name"] for e in events if e.get("cat") == "user_annotation"}, "parts are marked in the trace"
    # ts + baseTimeNanoseconds / 1000 is wall-clock µs, the clock of latency and telemetry rows
    first_op_us = min(e["ts"] for e in events if e.get("cat") == "cpu_op") + trace["baseTimeNanoseconds"] / 1000
    assert result.latency[-1]["start_ts_us"] < first_op_us < time.time_ns() / 1000


def test_tensorboard_profiler_plugin_opens_the_trace(session, tmp_path):
    from torch_tb_profiler import consts
    from torch_tb_profiler.profiler.data import RunProfileData
    from torch_tb_profiler.profiler.run_generator import RunGenerator

    _, config, result = session
    match = consts.WORKER_PATTERN.match(result.trace_path.name)  # how the plugin finds workers in a run dir
    assert match and match.group(1) == config.worker_name
    data = RunProfileData.parse(config.worker_name, None, str(result.trace_path), str(tmp_path))
    views = {view.name for view in RunGenerator(config.worker_name, None, data).generate_run_profile().views}
    assert {"overall", "operator", "trace", "memory"} <= views


def test_latency_rows_are_the_timed_repeats_only(session):
    built, config, result = session
    assert len(result.warmup_us) == 2
    assert sorted((r["phase"], r["role"], r["repeat"]) for r in result.latency) == sorted(
        (phase, role, i) for phase, role in (("iteration", "iteration"), ("project", "part"), ("attend", "part"), ("unmarked", "unmarked"))
        for i in range(REPEATS))
    for row in result.latency:
        assert set(row) == set(LATENCY_COLUMNS) and row["latency_us"] > 0 and row["item_unit"] == "samples"
        if row["phase"] in ("iteration", "project"):
            assert row["items"] == 4 and row["items_per_s"] == pytest.approx(4 / (row["latency_us"] / 1e6))


def test_parts_sum_to_the_iteration_they_were_timed_in(session):
    _, _, result = session
    for repeat in range(REPEATS):
        rows = {r["phase"]: r["latency_us"] for r in result.latency if r["repeat"] == repeat}
        whole = rows.pop("iteration")
        assert 0 < whole - sum(rows.values()) < 50, (whole, rows)  # only the timer's own clock reads are outside


def test_nested_parts_are_refused():
    from profilers.parts import Parts

    parts = Parts(time.perf_counter_ns)
    parts.start()
    with pytest.raises(RuntimeError, match="parts do not nest"):
        with parts("outer"):
            with parts("inner"):
                pass


def test_telemetry_unavailable_here_and_run_goes_on(session):
    _, _, result = session
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert result.telemetry_status.startswith("telemetry unavailable:")
    assert result.telemetry == []


def test_metrics_and_environment(session):
    built, _, result = session
    metrics = {m["name"]: m for m in result.metrics}
    params = sum(p.numel() for p in built.model.parameters())
    assert metrics["param_count"]["value"] == params and metrics["param_count"]["source"] == "model.parameters()"
    assert metrics["param_bytes"]["value"] == 4 * params
    assert metrics["kv_cache_bytes"] == {"name": "kv_cache_bytes", "value": 0, "unit": "bytes", "source": "built.info"}
    assert metrics["peak_rss_growth_bytes"]["source"].startswith(("VmHWM", "/proc/self/statm"))
    env = result.environment
    assert env["torch_version"] == torch.__version__ and env["device"] == "cpu"
    for key in ("cuda_version", "driver_version", "device_name", "cpu_model", "host", "python_version", "git_sha"):
        assert key in env


def test_attention_calls_recorded_in_the_session(session):
    _, _, result = session
    (row,) = result.attention_calls
    assert (row["module_path"], row["model_call"], row["q_len"], row["kv_len"], row["kind"]) == ("tiny.attn", 0, 12, 12, "self")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_session_on_cuda(tmp_path):
    model = nn.Linear(256, 256).cuda()
    x = torch.randn(64, 256, device="cuda")
    built = Built(iteration=lambda part: model(x), items=64, item_unit="rows", model=model)
    result = profile(built, ProfileConfig(logdir=tmp_path, worker_name="gpu", device="cuda", timed_repeats=2))
    metrics = {m["name"]: m["value"] for m in result.metrics}
    assert metrics["peak_allocated_bytes"] >= 64 * 256 * 4
    assert result.environment["cuda_version"] and result.environment["device_name"]
    trace = json.loads(gzip.decompress(result.trace_path.read_bytes()))
    assert any(e.get("cat") == "kernel" for e in trace["traceEvents"])
    if result.telemetry_status == "ok":
        assert {r["gpu_index"] for r in result.telemetry} and result.environment["driver_version"]


@pytest.mark.parametrize("field, value, message", [
    ("active_iterations", 0, "active_iterations"),
    ("timed_repeats", 0, "timed_repeats"),
    ("warmup_iterations", -1, "warmup_iterations"),
    ("nvml_interval_s", 0, "nvml_interval_s"),
    ("device", "tpu", "--device: unknown device .tpu."),
    ("device", "xla", "--device: unsupported device .xla."),
    ("device", "cpu:3", "--device cpu:3: expected cpu, without an index"),
    ("worker_name", "a/b", "worker_name"),
])
def test_config_errors_name_the_argument(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        ProfileConfig(**{"logdir": tmp_path, "worker_name": "w", field: value})


def test_reserved_part_names_are_refused(tmp_path):
    def iteration(part):
        with part("iteration"):
            pass

    built = Built(iteration=iteration, items=1, item_unit="x")
    with pytest.raises(ValueError, match="part name 'iteration' is reserved"):
        profile(built, ProfileConfig(logdir=tmp_path, worker_name="w"))


# -- NVML sampler ------------------------------------------------------------------------------
class _FakeNvml:
    """The slice of pynvml the sampler uses, with two GPUs; the second does not report power."""

    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):
        pass

    def __init__(self, gpus=2, init_error=None, fail_after=None):
        self.gpus, self.init_error, self.fail_after = gpus, init_error, fail_after
        self.reads = 0
        self.shutdowns = 0

    def nvmlInit(self):
        if self.init_error:
            raise self.NVMLError(self.init_error)

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        return self.gpus

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return f"Fake GPU {handle}"

    def nvmlDeviceGetMemoryInfo(self, handle):
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise self.NVMLError("GPU is lost")
        return SimpleNamespace(used=(handle + 1) * 2**30, total=16 * 2**30)

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=50 + handle, memory=10)

    def nvmlDeviceGetPowerUsage(self, handle):
        if handle == 1:
            raise self.NVMLError_NotSupported("not supported")
        return 123_456  # milliwatts

    def nvmlDeviceGetClockInfo(self, handle, clock):
        assert clock == self.NVML_CLOCK_SM
        return 1410

    def nvmlDeviceGetTemperature(self, handle, sensor):
        assert sensor == self.NVML_TEMPERATURE_GPU
        return 60 + handle


def test_sampler_rows_per_gpu_at_the_interval():
    fake = _FakeNvml()
    before = time.time_ns() / 1000
    with NvmlSampler(interval_s=0.01, nvml=fake) as sampler:
        time.sleep(0.1)
    after = time.time_ns() / 1000
    assert sampler.status == "ok" and fake.shutdowns == 1
    rows = sampler.rows
    assert all(set(r) == set(TELEMETRY_COLUMNS) for r in rows)
    gpu0 = [r for r in rows if r["gpu_index"] == 0]
    gpu1 = [r for r in rows if r["gpu_index"] == 1]
    assert len(gpu0) == len(gpu1) >= 5  # 0.1 s at 0.01 s, start and stop samples included
    assert [r["ts_us"] for r in gpu0] == sorted(r["ts_us"] for r in gpu0)
    assert before <= gpu0[0]["ts_us"] and gpu0[-1]["ts_us"] <= after
    assert gpu0[0] | {"ts_us": 0} == {
        "ts_us": 0, "gpu_index": 0, "gpu_name": "Fake GPU 0", "gpu_util_pct": 50, "memory_used_bytes": 2**30,
        "memory_total_bytes": 16 * 2**30, "power_w": pytest.approx(123.456), "sm_clock_mhz": 1410, "temperature_c": 60}
    assert {r["power_w"] for r in gpu1} == {None} and {r["memory_used_bytes"] for r in gpu1} == {2 * 2**30}


def test_sampler_reports_init_failure_without_raising():
    with NvmlSampler(nvml=_FakeNvml(init_error="Driver Not Loaded")) as sampler:
        pass
    assert sampler.status == "telemetry unavailable: NVMLError: Driver Not Loaded" and sampler.rows == []
    with NvmlSampler(nvml=_FakeNvml(gpus=0)) as sampler:
        pass
    assert sampler.status == "telemetry unavailable: NVML reports no GPU"


def test_sampler_reports_a_failure_while_sampling():
    with NvmlSampler(interval_s=0.005, nvml=_FakeNvml(gpus=1, fail_after=3)) as sampler:
        time.sleep(0.1)
    assert sampler.status == "telemetry unavailable: sampling stopped after 3 rows: NVMLError: GPU is lost"
    assert len(sampler.rows) == 3


def test_sampler_rejects_a_bad_interval():
    with pytest.raises(ValueError, match="interval_s"):
        NvmlSampler(interval_s=0, nvml=_FakeNvml())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_real_nvml_here_reports_library_not_found():
    with NvmlSampler() as sampler:
        pass
    assert sampler.status.startswith("telemetry unavailable: NVMLError_LibraryNotFound")
    assert sampler.rows == []


# -- timing, memory, environment -------------------------------------------------------------------
def test_time_repeats_rows():
    resets = []

    def iteration(part):
        with part("a"):
            time.sleep(0.002)
        with part("b"):
            pass

    built = Built(iteration=iteration, items=3, item_unit="tokens", part_items={"a": 2}, reset=lambda: resets.append(1))
    rows = time_repeats(built, 2, make_clock("cpu"))
    assert [(r["phase"], r["repeat"], r["items"]) for r in rows if r["repeat"] == 0] == [
        ("iteration", 0, 3), ("unmarked", 0, None), ("a", 0, 2), ("b", 0, None)]
    assert all(r["latency_us"] >= 2000 for r in rows if r["phase"] in ("iteration", "a"))
    assert [r["items_per_s"] for r in rows if r["phase"] == "b"] == [None, None]
    assert len(resets) == 2, "a training workload's reset runs before every timed repeat"


def test_peak_rss_sees_a_transient_allocation():
    with PeakRss() as rss:
        block = bytearray(64 * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page
        del block
    assert rss.growth_bytes >= 48 * 2**20, rss.source


def test_model_metrics_prefer_the_workload_info():
    model = nn.Linear(3, 2)
    got = {m["name"]: (m["value"], m["source"]) for m in model_metrics({"param_bytes": 99}, model)}
    assert got == {"param_bytes": (99, "built.info"), "param_count": (8, "model.parameters()")}


def test_git_sha_is_none_outside_a_repository(tmp_path: Path):
    assert git_sha(tmp_path) is None


def test_peak_rss_growth_sees_a_brief_allocation():
    """A step that holds 64 MiB for a moment and frees it: the peak sees it, however brief; a step that
    allocates nothing shows (almost) no growth."""
    from profilers.memory import step_memory

    def allocate():
        block = torch.ones(16 * 2**20, dtype=torch.float32)  # 64 MiB, every page touched
        del block

    grown = {m["name"]: m["value"] for m in step_memory(allocate, "cpu")}["peak_rss_growth_bytes"]
    idle = {m["name"]: m["value"] for m in step_memory(lambda: None, "cpu")}["peak_rss_growth_bytes"]
    assert 60 * 2**20 <= grown <= 96 * 2**20, grown
    assert idle < 8 * 2**20, idle


def test_peak_rss_growth_counts_memory_the_allocator_kept_from_earlier_steps():
    """glibc keeps freed heap blocks resident (below its self-raising trim threshold): a step served
    from them adds no RSS, yet uses the memory. step_memory trims the free heap first, so it counts."""
    from profilers.memory import release_free_memory, step_memory

    if not release_free_memory():
        pytest.skip("no glibc malloc_trim here")
    torch.ones(5 * 2**20).sum()  # a 20 MiB block freed: glibc raises its mmap threshold past the step's blocks

    def step():
        a = torch.ones(2**20)  # 4 MiB blocks, now served from the heap
        return (a + a * 2).sum()

    step()  # the step's blocks freed and kept by the allocator
    grown = {m["name"]: m["value"] for m in step_memory(step, "cpu")}["peak_rss_growth_bytes"]
    assert grown >= 8 * 2**20, grown
