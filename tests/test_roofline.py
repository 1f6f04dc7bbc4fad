"""Operator roofline: FLOPs from recorded shapes against PyTorch's own FlopCounterMode on a run
profiled here, and against ResNet-50's published count on the shared V100 trace; device peaks."""
from __future__ import annotations

import json

import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from profilers.cpu_peak import peak_metrics
from profilers.trace import record_trace
from store.analysis.op_flops import Call, conv_output, flops_and_bytes
from store.analysis.roofline import operator_calls, operator_roofline, roof_curves, run_roofs
from store.device_peaks import load_peaks, peaks_for
from store.ingest import RunInfo, ingest_file

RESNET = "kineto/resnet50_num_workers_0/worker0.1623143566756.pt.trace.json.gz"  # V100, 6 training steps of batch 32
NO_KERNEL_TIMES = "hta/distributed_info_unavailable/distributed_info_not_found.json.gz"  # A100 host side only
TF0 = "hta/trace_filter/sampled_rank-0.json.gz"  # A100 kernels, no deviceProperties


def _ops(x, w, q, k, lin, ln):
    y = F.conv2d(x, w, stride=2, padding=1)
    y.sum().backward()
    F.scaled_dot_product_attention(q, k, k, enable_gqa=True)
    torch.bmm(q[0], k[0].transpose(1, 2).repeat(2, 1, 1))
    torch.matmul(q, q.transpose(-1, -2))
    ln(torch.relu(lin(q)) + 1.0)


def _inputs():
    torch.manual_seed(0)
    return (torch.randn(2, 3, 32, 32, requires_grad=True), torch.randn(8, 3, 3, 3, requires_grad=True),
            torch.randn(1, 4, 16, 8), torch.randn(1, 2, 16, 8), torch.nn.Linear(8, 24), torch.nn.LayerNorm(24))


@pytest.fixture(scope="module")
def own_run(trace_store, tmp_path_factory):
    """A run profiled here the way `observatory run` profiles (record_trace, record_shapes) and stored through
    the import path with its measured CPU roofs; and FlopCounterMode's counts of the same operators."""
    args = _inputs()
    trace = record_trace(lambda: _ops(*args), tmp_path_factory.mktemp("tb"), "roofline", 1, "cpu")
    with FlopCounterMode(display=False) as counter:
        _ops(*_inputs())
    # fixed roofs (what peak_metrics measures: 50 GFLOP/s, 10 GB/s): a loaded machine's measurement would move the ridge
    metrics = pa.Table.from_pylist([{**row, "value": value} for row, value in zip(peak_metrics("float32"), (50e9, 10e9))])
    run = RunInfo(fields={"source": "profile", "device": "cpu", "dtype": "float32"}, extra_tables={"metrics": metrics})
    run_id = ingest_file(trace_store.store, trace, run=run).run_id
    return run_id, {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}


def test_own_run_flops_match_flop_counter_mode(trace_store, own_run):
    run_id, expected = own_run
    calls = operator_calls(trace_store.con, run_id)
    flops = calls.groupby("name").flops.sum().to_dict()
    assert flops["aten::conv2d"] == expected["aten.convolution"]  # its Concrete Inputs give stride and padding
    assert flops["aten::convolution_backward"] == expected["aten.convolution_backward"]
    assert flops["aten::linear"] == expected["aten.addmm"]
    assert flops["aten::bmm"] + flops["aten::matmul"] == expected["aten.bmm"]
    # the CPU's fused SDPA has no formula in FlopCounterMode's registry; flop_counter's own SDPA formula, given the shapes:
    assert flops["aten::scaled_dot_product_attention"] == sdpa_flop_count([1, 4, 16, 8], [1, 2, 16, 8], [1, 2, 16, 8])
    assert {"aten::_convolution", "aten::addmm", "aten::native_layer_norm"}.isdisjoint(flops)  # counted once, at the outermost call
    assert flops["aten::layer_norm"] == 5 * 4 * 16 * 24 and flops["aten::relu"] == 4 * 16 * 24
    assert (calls.time_us > 0).all() and (calls.kernels == 0).all()


def test_own_run_roofline_uses_measured_cpu_roofs(trace_store, own_run):
    run_id, _ = own_run
    roofs = run_roofs(trace_store.con, run_id)
    assert roofs.name == "this CPU, measured" and roofs.memory_bytes_per_s == 10e9 and roofs.flops_for("float") == 50e9
    table = operator_roofline(trace_store.con, run_id).set_index("name")
    linear = table.loc["aten::linear"]
    assert linear.bytes == 4 * (4 * 16 * 8 + 24 * 8 + 24 + 4 * 16 * 24)  # input, weight, bias read; output written
    assert linear.intensity == pytest.approx(linear.flops / linear.bytes)
    assert linear.achieved_flops_per_s == pytest.approx(linear.flops / linear.time_us * 1e6)
    assert linear.bound == ("compute" if linear.intensity >= 5 else "memory")  # ridge: 50e9 / 10e9 FLOP/byte
    assert linear.peak_pct == pytest.approx(100 * linear.achieved_flops_per_s / min(50e9, linear.intensity * 10e9))
    assert table.loc["aten::relu"].bound == "memory"  # 1 FLOP per 8 bytes


# ResNet-50 at 224x224 is 4.09 GMACs (torchvision's model card; fvcore's count) of which the final linear
# layer is 2048 x 1000 = 2.048 M: its 53 convolutions do 2 x 4.087-4.088 GFLOP per image.
def test_resnet50_convolution_flops(trace_store):
    """The 2021 trace carries shapes but not strides: each convolution's output shape comes from its
    autograd node (the gradient it receives), and the backward's computed gradients from the cuDNN calls."""
    table = operator_roofline(trace_store.con, trace_store.run_id(RESNET)).set_index("name")
    steps, batch = 6, 32
    conv = table.loc["aten::conv2d"]
    assert conv.calls == 53 * steps
    assert conv.flops / steps / batch / 2 == pytest.approx(4.0875e9, abs=0.001e9)
    first_conv_input_grad = 2 * batch * 64 * 3 * 7 * 7 * 112 * 112  # the image needs no gradient
    assert table.loc["aten::cudnn_convolution_backward"].flops == 2 * conv.flops - steps * first_conv_input_grad
    assert table.loc["aten::linear"].flops == steps * 2 * batch * 2048 * 1000
    assert table.loc["aten::mm"].flops == steps * 2 * (2 * batch * 2048 * 1000)  # its backward: input and weight gradients
    roofs = run_roofs(trace_store.con, trace_store.run_id(RESNET))
    assert roofs.name == "Tesla V100 SXM2" and conv.peak_flops_per_s == 15.7e12 and conv.peak_bytes_per_s == 900e9
    assert conv.bound == "compute" and table.loc["aten::batch_norm"].bound == "memory"
    assert (table[table.family.isin(["convolution", "gemm"])].peak_pct <= 100).all()
    assert conv.time_us == pytest.approx(126500, rel=1e-6)  # device time of the kernels the calls launched
    roofs = roof_curves(trace_store.con, trace_store.run_id(RESNET)).groupby("precision")
    assert roofs.attainable_flops_per_s.max().to_dict() == {"fp16": 125e12, "fp32": 15.7e12}
    assert roofs.ridge_intensity.first()["fp32"] == pytest.approx(15.7e12 / 900e9)


def test_absent_where_the_trace_lacks_the_data(trace_store):
    # kernels but no deviceProperties: FLOPs and rates, no roofs
    table = operator_roofline(trace_store.con, trace_store.run_id(TF0))
    assert table.flops.notna().any() and table.bound.isna().all() and table.peak_pct.isna().all()
    assert run_roofs(trace_store.con, trace_store.run_id(TF0)) is None
    # recorded on an A100 but without its kernels: no time to divide by
    assert operator_roofline(trace_store.con, trace_store.run_id(NO_KERNEL_TIMES)).empty


def test_formulas_on_recorded_shapes():
    assert conv_output([1, 3, 32, 32], [8, 3, 3, 3], [2, 2], [1, 1], [1, 1], False) == [1, 8, 16, 16]
    assert conv_output([1, 8, 16, 16], [8, 3, 4, 4], [2, 2], [1, 1], [1, 1], True, 0, 1) == [1, 3, 32, 32]
    assert flops_and_bytes(Call("aten::mm", [[4, 6], [6, 5]], ["float", "float"])) == (2 * 4 * 6 * 5, 4 * (24 + 30 + 20))
    assert flops_and_bytes(Call("aten::mm", [[4, 6], [6, 5]], ["c10::BFloat16", "c10::BFloat16"]))[1] == 2 * (24 + 30 + 20)
    assert flops_and_bytes(Call("aten::conv2d", [[1, 3, 8, 8], [4, 3, 3, 3]], ["float", "float"])) == (None, None)  # no stride
    assert flops_and_bytes(Call("aten::_foreach_add_", [[[2], [3]], [[2], [3]]], ["TensorList", "TensorList"])) == (None, None)
    assert flops_and_bytes(Call("aten::view", [[4, 6], []], ["float", "ScalarList"])) == (None, None)


def test_device_peaks_table(tmp_path, monkeypatch):
    assert peaks_for("NVIDIA A100-SXM4-80GB").memory_bytes_per_s == 2039e9
    assert peaks_for("NVIDIA A100-PG509-200").memory_bytes_per_s == 1555e9
    assert peaks_for("NVIDIA H100 80GB HBM3").flops_for("c10::BFloat16") == 989.4e12
    assert peaks_for("Tesla V100-SXM2-32GB").flops_for("float", tf32=True) == 15.7e12  # no TF32 on a V100
    assert peaks_for("NVIDIA A100-PG509-200").flops_for("float", tf32=True) == 156e12
    assert peaks_for("AMD Instinct MI300X").flops_for("c10::Half") == 1307.4e12
    assert peaks_for("Some Future GPU") is None and peaks_for(None) is None
    mine = tmp_path / "peaks.csv"
    mine.write_text("device_regex,name,fp32_flops_per_s,tf32_flops_per_s,bf16_flops_per_s,fp16_flops_per_s,memory_bytes_per_s,source\n"
                    "Future,Future GPU,1e15,,,,1e13,my lab\n")
    monkeypatch.setenv("OBSERVATORY_DEVICE_PEAKS", str(mine))
    assert peaks_for("Some Future GPU").name == "Future GPU"
    assert peaks_for("NVIDIA A100-SXM4-80GB").name == "A100 80GB SXM4"  # the built-in rows still apply
    mine.write_text(mine.read_text().replace("1e13", "fast"))
    load_peaks.cache_clear()
    with pytest.raises(ValueError, match="line 2: memory_bytes_per_s='fast' is not a number"):
        peaks_for("Some Future GPU")
    load_peaks.cache_clear()


def test_cpu_peak_metrics_are_quick_and_named():
    import time

    start = time.perf_counter()
    rows = peak_metrics("float32")
    assert time.perf_counter() - start < 1.0  # ~0.2 s, with room for a busy machine
    assert [r["name"] for r in rows] == ["cpu_peak_flops_per_s", "cpu_peak_bytes_per_s"]
    assert all(r["value"] > 0 for r in rows) and "torch.mm" in rows[0]["source"]
    with pytest.raises(ValueError, match="dtype='int8'"):
        peak_metrics("int8")
