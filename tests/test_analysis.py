"""Analyses on the real traces in ../shared/traces: HTA's reference figures, per-kernel statistics
against a direct pandas computation, operator categories of real kernel and operator names."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from store.analysis import (
    gpu_idle_breakdown,
    gpu_kernel_set,
    gpu_time_breakdown,
    host_overhead,
    kernel_stats,
    op_time_by_category,
)
from store.analysis._sql import DEVICE_OP_CATS, LAUNCH_CATS
from store.analysis.categories import CATEGORIES
from store.views import ANALYSIS_VIEWS
from tests.conftest import SHARED_TRACES

NCCL = "hta/nccl_parser_config/nccl_data.json.gz"
NS = "hta/ns_resolution_trace/rank-0.Apr_03_18_51_38.1102.pt.trace.json.gz"
NEG = "hta/negative_queue_length_values_check/rank0.json.gz"
TF0 = "hta/trace_filter/sampled_rank-0.json.gz"
CPU_ONLY = "hta/cpu_only/rank-34.Jul_15_10_52_41.1074.pt.trace.json.gz"
TRITON = "hta/triton_example/triton_example.json.gz"
ANNOTATED = "hta/with_gpu_user_annotation/step_based_trace_2543932.json.gz"


# -- HTA's temporal breakdown: every figure of the README's table ------------------------
def readme_hta_rows() -> list[tuple]:
    """(trace, rank, idle, compute, non_compute, kernel_span, idle_pct) rows of the README's HTA table."""
    readme = SHARED_TRACES / "README.md"
    if not readme.is_file():
        return []
    rows, in_table = [], False
    for line in readme.read_text().splitlines():
        if line.startswith("| trace | rank | idle"):
            in_table = True
        elif in_table and line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not set(cells[0]) <= {"-"}:
                rows.append((cells[0], int(cells[1]), *(float(c) for c in cells[2:7])))
        elif in_table:
            break
    return rows


HTA_ROWS = readme_hta_rows()


def run_for_rank(trace_store, trace: str, rank: int) -> str:
    """The run of the file in hta/<trace>/ whose distributedInfo rank is `rank`."""
    files = sorted(p for p in (SHARED_TRACES / "hta" / trace).iterdir() if p.name.endswith((".json", ".json.gz")))
    for path in files:
        run_id = trace_store.run_id(str(path.relative_to(SHARED_TRACES)))
        if trace_store.con.execute("SELECT rank FROM runs WHERE run_id = ?", [run_id]).fetchone()[0] == rank:
            return run_id
    raise AssertionError(f"no file in hta/{trace} has rank {rank}")


def test_readme_lists_hta_figures():
    if not (SHARED_TRACES / "README.md").is_file():
        pytest.skip("../shared/traces/README.md not present")
    assert len(HTA_ROWS) >= 5, "the README's HTA table did not parse"


@pytest.mark.parametrize("row", HTA_ROWS, ids=[f"{r[0]}-rank{r[1]}" for r in HTA_ROWS])
def test_temporal_breakdown_matches_hta(trace_store, row):
    trace, rank, idle, compute, non_compute, span, idle_pct = row
    got = gpu_time_breakdown(trace_store.con, run_for_rank(trace_store, trace, rank))
    assert len(got) == 1
    got = got.iloc[0]
    for column, expected in [("idle_us", idle), ("compute_us", compute), ("non_compute_us", non_compute),
                             ("kernel_span_us", span), ("idle_pct", idle_pct)]:
        assert got[column] == pytest.approx(expected, rel=0.005), column


# -- HTA's idle time breakdown ------------------------------------------------------------
# HTA 0.5.0 get_idle_time_breakdown(consecutive_kernel_delay=30) on these files, run once by
# hand (HTA is not a dependency): stream -> (host wait, kernel wait, other) in microseconds.
HTA_IDLE = {
    NS: {7: (1709, 8404, 0)},
    NCCL: {7: (357247, 2155, 0), 40: (381499, 0, 0)},
    TF0: {7: (213825, 1985, 261740), 23: (596037, 70, 34), 25: (0, 9, 47865), 84: (148934, 6, 0), 203: (0, 0, 0)},
    NEG: {7: (0, 17159, 691231), 25: (628598, 85, 0), 27: (792592, 1000, 7135), 84: (62901, 12, 665192),
          285: (0, 0, 675305), 363: (0, 75, 673182)},
}


@pytest.mark.parametrize("trace", list(HTA_IDLE), ids=lambda t: t.split("/")[1])
def test_idle_breakdown_matches_hta(trace_store, trace):
    got = gpu_idle_breakdown(trace_store.con, trace_store.run_id(trace)).set_index("stream")
    assert set(got.index) == set(HTA_IDLE[trace])
    for stream, expected in HTA_IDLE[trace].items():
        row = got.loc[stream]
        assert (row.host_wait_us, row.kernel_wait_us, row.other_us) == pytest.approx(expected, abs=0.5), stream
        assert row.idle_us == pytest.approx(sum(expected), abs=1.5)


def test_idle_threshold_moves_gaps_between_kernel_wait_and_other(trace_store):
    run_id = trace_store.run_id(TF0)
    default = gpu_idle_breakdown(trace_store.con, run_id).set_index("stream")
    wide = gpu_idle_breakdown(trace_store.con, run_id, kernel_wait_threshold_us=1e9).set_index("stream")
    assert (wide.other_us == 0).all()
    assert wide.host_wait_us.equals(default.host_wait_us)
    assert np.allclose(wide.kernel_wait_us, default.kernel_wait_us + default.other_us)


# -- the two definitions -----------------------------------------------------------------
def union_length(starts, ends) -> float:
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted(zip(starts, ends)):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    return total + (current_end - current_start if current_end is not None else 0.0)


def run_events(trace_store, run_id: str) -> pd.DataFrame:
    return trace_store.con.execute("SELECT * FROM events WHERE run_id = ?", [run_id]).df()


def test_all_kernels_counts_every_device_op(trace_store):
    run_id = trace_store.run_id(NCCL)
    events = run_events(trace_store, run_id)
    ops = events[(events.ph == "X") & events.cat.isin(DEVICE_OP_CATS)]
    starts, ends = ops.ts_us, ops.ts_us + ops.dur_us
    got = gpu_time_breakdown(trace_store.con, run_id, definition="all_kernels").iloc[0]
    assert got.kernel_span_us == pytest.approx(ends.max() - starts.min())
    assert got.idle_us == pytest.approx(ends.max() - starts.min() - union_length(starts, ends))
    hta = gpu_time_breakdown(trace_store.con, run_id).iloc[0]
    assert hta.kernel_span_us < got.kernel_span_us  # HTA drops the last ProfilerStep


def test_hta_with_one_step_keeps_everything_with_a_stream(trace_store):
    """HTA filters nothing with fewer than two ProfilerSteps and counts any event whose args carry a
    stream: here Inductor's CPU-side launcher op for the Triton kernel. all_kernels counts the kernel."""
    run_id = trace_store.run_id(TRITON)
    assert "cpu_op" in set(gpu_kernel_set(trace_store.con, run_id, "hta").cat)
    assert set(gpu_kernel_set(trace_store.con, run_id, "all_kernels").cat) == {"kernel"}
    hta = gpu_time_breakdown(trace_store.con, run_id, "hta").iloc[0]
    ours = gpu_time_breakdown(trace_store.con, run_id, "all_kernels").iloc[0]
    assert hta.kernel_span_us == 94  # HTA 0.5.0 reports 94 us
    assert ours.kernel_span_us == pytest.approx(1.76, abs=0.01)  # the kernel alone


def test_no_device_events_give_no_gpu_rows(trace_store):
    run_id = trace_store.run_id(CPU_ONLY)
    for definition in ("hta", "all_kernels"):
        assert gpu_time_breakdown(trace_store.con, run_id, definition).empty
        assert gpu_idle_breakdown(trace_store.con, run_id, definition).empty
    assert kernel_stats(trace_store.con, run_id).empty
    assert set(op_time_by_category(trace_store.con, run_id).side) == {"cpu"}


def test_arguments_are_checked(trace_store):
    run_id = trace_store.run_id(CPU_ONLY)
    with pytest.raises(ValueError, match="definition='hta2'"):
        gpu_time_breakdown(trace_store.con, run_id, definition="hta2")
    with pytest.raises(ValueError, match="run_id='t-nope'"):
        kernel_stats(trace_store.con, "t-nope")


# -- host overhead -----------------------------------------------------------------------
def host_overhead_reference(events: pd.DataFrame) -> tuple[float, float]:
    """(wall_us, op_us) computed directly: leaves are ops the next op on their thread does not start inside."""
    ops = events[(events.ph == "X") & (events.cat == "cpu_op")].dropna(subset=["ts_us", "dur_us"])
    ops = ops.assign(end=ops.ts_us + ops.dur_us).sort_values(["pid", "tid", "ts_us", "dur_us"], ascending=[True, True, True, False], kind="stable")
    next_start = ops.groupby(["pid", "tid"], dropna=False).ts_us.shift(-1)
    leaves = ops[next_start.isna() | (next_start >= ops.end)]
    steps = events[(events.ph == "X") & ~events.on_device.astype(bool) & events.name.str.startswith("ProfilerStep#")]
    region = list(zip(steps.ts_us, steps.ts_us + steps.dur_us)) or [(ops.ts_us.min(), ops.end.max())]
    clipped = [(max(s, a), min(e, b)) for s, e in zip(leaves.ts_us, leaves.end) for a, b in region if s < b and e > a]
    return union_length(*zip(*region)), union_length(*zip(*clipped)) if clipped else 0.0


@pytest.mark.parametrize("trace", [NCCL, ANNOTATED, CPU_ONLY], ids=["steps", "no-steps", "cpu-only"])
def test_host_overhead_matches_direct_computation(trace_store, trace):
    run_id = trace_store.run_id(trace)
    got = host_overhead(trace_store.con, run_id)
    assert len(got) == 1
    got = got.iloc[0]
    wall, op = host_overhead_reference(run_events(trace_store, run_id))
    assert got.wall_us == pytest.approx(wall)
    assert got.op_us == pytest.approx(op)
    assert got.host_overhead_us == pytest.approx(wall - op)
    assert 0 <= got.host_overhead_pct <= 100


# -- kernel statistics and category time --------------------------------------------------
def test_kernel_stats_match_pandas(trace_store):
    run_id = trace_store.run_id(NCCL)
    events = run_events(trace_store, run_id)
    device = events[(events.ph == "X") & events.cat.isin(DEVICE_OP_CATS)]
    launches = events[(events.ph == "X") & events.cat.isin(LAUNCH_CATS) & events.correlation.notna()]
    launch_ts = launches.sort_values("event_idx").groupby("correlation").ts_us.last().rename("launch_ts_us")
    device = device.join(launch_ts, on="correlation")
    device = device.assign(delay=device.ts_us - device.launch_ts_us)
    by = device.groupby(["cat", "name"])
    expected = pd.DataFrame({
        "count": by.size(), "total_us": by.dur_us.sum(), "mean_us": by.dur_us.mean(), "min_us": by.dur_us.min(),
        "max_us": by.dur_us.max(), "p50_us": by.dur_us.quantile(0.5), "p90_us": by.dur_us.quantile(0.9),
        "p99_us": by.dur_us.quantile(0.99), "launch_delay_mean_us": by.delay.mean(),
        "launch_delay_p50_us": by.delay.quantile(0.5), "launch_delay_p90_us": by.delay.quantile(0.9),
        "launch_delay_max_us": by.delay.max(),
    })
    got = kernel_stats(trace_store.con, run_id).set_index(["cat", "name"]).loc[expected.index, expected.columns]
    assert len(got) == len(expected) > 50
    pd.testing.assert_frame_equal(got.astype(float), expected.astype(float), check_exact=False, rtol=1e-9)
    assert (got.mean_us <= got.max_us).all() and (got["count"] > 1).any()  # no "total as mean" past a top 10


def test_category_time_adds_up(trace_store):
    run_id = trace_store.run_id(NCCL)
    events = run_events(trace_store, run_id)
    got = op_time_by_category(trace_store.con, run_id)
    assert set(got.category) <= set(CATEGORIES)
    device = got[got.side == "device"]
    assert device.time_us.sum() == pytest.approx(events[events.cat.isin(DEVICE_OP_CATS)].dur_us.sum())
    assert got[got.side == "cpu"].time_us.sum() == pytest.approx(events[events.cat == "cpu_op"].self_us.sum())
    assert device.share_pct.sum() == pytest.approx(100)
    assert {"communication", "memory", "convolution"} <= set(device.category)


def test_every_view_has_run_id_and_rank(trace_store):
    for sql in ANALYSIS_VIEWS:
        view = re.search(r"CREATE OR REPLACE VIEW (\w+)", sql).group(1)
        columns = [d[0] for d in trace_store.con.execute(f"SELECT * FROM {view} LIMIT 0").description]
        assert columns[:2] == ["run_id", "rank"], view


# -- operator categories of real names ----------------------------------------------------
# (name, on_device, category): names from the shared traces; the flash/fmha names (none of the
# shared traces runs attention kernels) are PyTorch's own SDPA kernels.
REAL_NAMES = [
    ("void cudnn::cnn::wgrad_alg0_engine<float, 128, 6, 7, 3, 3, 5, false, 512>(int, int, int, float const*, int, float*, float const*, kernel_grad_params, unsigned long long, int, float, int, int, int, int)", True, "convolution"),
    ("volta_scudnn_winograd_128x128_ldg1_ldg4_relu_tile148t_nt_v1", True, "convolution"),
    ("cudnn_infer_volta_scudnn_128x64_relu_medium_nn_v1", True, "convolution"),
    ("volta_scudnn_128x128_stridedB_splitK_small_nn_v1", True, "convolution"),
    ("void cutlass_cudnn_infer::Kernel<cutlass_tensorop_s1688dgrad_optimized_tf32_64x128_32x3_nhwc_align4>(cutlass_tensorop_s1688dgrad_optimized_tf32_64x128_32x3_nhwc_align4::Params)", True, "convolution"),
    ("sm80_xmma_fprop_implicit_gemm_indexed_tf32f32_tf32f32_f32_nhwckrsc_nchw_tilesize128x128x16_stage4_warpsize2x2x1_g1_tensor16x8x8_alignc4_execute_kernel_cudnn", True, "convolution"),
    ("void fft2d_r2c_32x32<float, false, 5u, true>(float2*, float const*, int, int, int, int, int, int, int, int, int, cudnn::reduced_divisor, bool, int2, int, int)", True, "convolution"),
    ("aten::cudnn_convolution", False, "convolution"),
    ("fb::convex_sum", False, "other"),
    ("volta_sgemm_64x64_nt", True, "gemm"),
    ("ampere_sgemm_128x64_nn", True, "gemm"),
    ("void cutlass::Kernel<cutlass_80_tensorop_s1688gemm_256x64_16x4_tn_align1>(cutlass_80_tensorop_s1688gemm_256x64_16x4_tn_align1::Params)", True, "gemm"),
    ("Cijk_Alik_Bljk_SB_Bias_AS_SAV_UserArgs_MT64x16x32_MI16x16x1_SN_LDSB0_AFC1_AFEM1_AFEM1_ASEM1_CLR1_CADS0_EPS0_GRVWA2_GRVWB2_GSUAMB_ISA90a_IU1_K1_LBSPPA128_LBSPPB128_LBSPPM0_LPA8_LPB8_LPM0_LRVW4_LWPMn1_MIAV0_MIWT1_1_MO40_NTn1_NTA0_NTB0_NTC0_NTD0_NTM0_NEPBS2_NLCA1_NLCB1_ONLL1_PGR2_PLR1_PKA1_SIA3_SS1_SPO1_SRVW0_SSO0_SVW1_TLDS1_USFGROn1_VSn1_VWA1_VWB1_WSGRA1_WSGRB1_WS64_WG64_4_1", True, "gemm"),
    ("void splitKreduce_kernel<float, float, float, float, true, false, false>(cublasSplitKParams<float>, float const*, float const*, float*, float const*, float const*, float const*, float const*, float*, void*, long, float*, int*)", True, "gemm"),
    ("aten::addmm", False, "gemm"),
    ("AddmmBackward0", False, "gemm"),
    ("fc-dtype_Float", True, "gemm"),
    ("fbgemm::permute_2D_sparse_data", False, "memory"),
    ("void fbgemm_gpu::permute_2D_data_kernel<false, int, int, decltype(nullptr)>(int, int, int, int const*, decltype(nullptr) const*, int const*, int const*, int const*, int*, decltype(nullptr)*)", True, "memory"),
    ("void split_embedding_codegen_forward_unweighted_kernel<c10::Half, c10::Half, float, false, long, 2ul, 32ul>(at::GenericPackedTensorAccessor<c10::Half, 1ul, at::RestrictPtrTraits, long>, at::GenericPackedTensorAccessor<c10::Half, 1ul, at::RestrictPtrTraits, long>, at::GenericPackedTensorAccessor<c10::Half, 2ul, at::RestrictPtrTraits, long>, at::GenericPackedTensorAccessor<int, 1ul, at::RestrictPtrTraits, int>, at::GenericPackedTensorAccessor<long, 1ul, at::RestrictPtrTraits, int>, at::GenericPackedTensorAccessor<int, 1ul, at::RestrictPtrTraits, int>, fbgemm_gpu::FixedDivisor, at::GenericPackedTensorAccessor<long, 1ul, at::RestrictPtrTraits, int>, at::GenericPackedTensorAccessor<long, 1ul, at::RestrictPtrTraits, int>, long, at::GenericPackedTensorAccessor<int, 1ul, at::RestrictPtrTraits, int>, at::GenericPackedTensorAccessor<float, 2ul, at::RestrictPtrTraits, long>)", True, "memory"),
    ("aten::_local_scalar_dense", False, "memory"),
    ("aten::flatten_dense_tensors", False, "memory"),
    ("Memcpy HtoD (Pinned -> Device)", True, "memory"),
    ("dma_request", True, "memory"),
    ("void at::native::(anonymous namespace)::CatArrayBatchedCopy<float, unsigned int, 1, 128, 1>(float*, at::native::(anonymous namespace)::CatArrInputTensorMetadata<float, unsigned int, 128, 1>, at::native::(anonymous namespace)::TensorSizeStride<unsigned int, 4u>, int, unsigned int)", True, "memory"),
    ("aten::copy_", False, "memory"),
    ("aten::cat.out-dtype_Float-extraKey_1", True, "memory"),
    ("ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t(ncclDevComm*, unsigned long, ncclWork*)", True, "communication"),
    ("ncclKernel_AllReduce_RING_LL_Sum_float(ncclDevComm*, unsigned long, ncclWork*)", True, "communication"),
    ("c10d::allreduce_", False, "communication"),
    ("All2All_Pooled_Wait", False, "communication"),
    ("aten::broadcast_tensors", False, "other"),
    ("triton_poi_fused_add_cos_sin_0", True, "elementwise"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>, at::detail::Array<char*, 3> >(int, at::native::CUDAFunctor_add<float>, at::detail::Array<char*, 3>)", True, "elementwise"),
    ("void multi_tensor_apply_kernel<TensorListMetadata<4>, AdamFunctor<float>, float, float, float, float, float, float, float, float, adamMode_t, float, int, int, int>(int, int volatile*, TensorListMetadata<4>, AdamFunctor<float>, float, float, float, float, float, float, float, float, adamMode_t, float, int, int, int)", True, "elementwise"),
    ("aten::add_", False, "elementwise"),
    ("aten::_foreach_mul_", False, "elementwise"),
    ("aten::normal_", False, "elementwise"),
    ("aten::mul.out-dtype_Float", True, "elementwise"),
    ("void cudnn::bn_fw_tr_1C11_kernel_NCHW<float, float, int, 128, true, 1, true>(cudnnTensorStruct, float const*, cudnnTensorStruct, float*, float const*, float const*, float, float, float*, float*, float*, float*, float, float)", True, "normalization"),
    ("void at::native::(anonymous namespace)::RowwiseMomentsCUDAKernel<float, float>(long, float, float const*, float*, float*)", True, "normalization"),
    ("aten::native_layer_norm", False, "normalization"),
    ("aten::linalg_vector_norm", False, "reduction"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::NormTwoOps<float, float, float>, unsigned int, float, 4> >(at::native::ReduceOp<float, at::native::NormTwoOps<float, float, float>, unsigned int, float, 4>)", True, "reduction"),
    ("void at::native::(anonymous namespace)::max_pool_forward_nchw<float, float>(int, float const*, long, long, long, int, int, int, int, int, int, int, int, int, int, float*, long*)", True, "reduction"),
    ("void cub::DeviceRadixSortOnesweepKernel<cub::DeviceRadixSortPolicy<long, int, int>::Policy800, false, long, int, int, int>(int*, int*, int*, int const*, long*, long const*, int*, int const*, int, int, int)", True, "reduction"),
    ("aten::nll_loss_forward", False, "reduction"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::threshold_kernel_impl<float>(at::TensorIteratorBase&, float, float)::{lambda(float, float)#1}, at::detail::Array<char*, 3> >(int, at::native::threshold_kernel_impl<float>(at::TensorIteratorBase&, float, float)::{lambda(float, float)#1}, at::detail::Array<char*, 3>)", True, "activation"),
    ("void (anonymous namespace)::softmax_warp_forward<float, float, float, 10, true, false>(float*, float const*, int, int, int, bool const*, int, bool)", True, "activation"),
    ("aten::relu_", False, "activation"),
    ("fmha_cutlassF_f32_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<float, cutlass::arch::Sm80, true, 64, 64, 64, true, true>::Params)", True, "attention"),
    ("void pytorch_flash::flash_fwd_kernel<pytorch_flash::Flash_fwd_kernel_traits<64, 128, 128, 4, false, false, cutlass::half_t, pytorch_flash::Flash_kernel_traits<64, 128, 128, 4, cutlass::half_t> >, false, false, false, false, true, true, false>(pytorch_flash::Flash_fwd_params)", True, "attention"),
    ("aten::_scaled_dot_product_flash_attention", False, "attention"),
    ("aten::view", False, "other"),
]


@pytest.mark.parametrize("name,on_device,category", REAL_NAMES, ids=[f"{c}:{n[:40]}" for n, _, c in REAL_NAMES])
def test_category_rules_on_real_names(name, on_device, category):
    from store.enrich import categorize, category_rules_path

    assert categorize(name, on_device, category_rules_path()) == category


def test_import_applies_category_rules(trace_store):
    run_id = trace_store.run_id(TF0)
    rows = trace_store.con.execute(
        "SELECT DISTINCT category FROM events WHERE run_id = ? AND name LIKE 'ncclKernel_SendRecv%'", [run_id]
    ).fetchall()
    assert rows == [("communication",)]


# -- baseline and variant pairing ------------------------------------------------------------
def test_pair_latest_takes_the_newest_baseline_and_variants_at_its_settings():
    from store.analysis.compare import pair_latest

    at = pd.Timestamp("2026-01-01", tz="UTC")
    runs = pd.DataFrame(
        [  # run_id, workload, variant, status, minutes after `at`, preset, batch, dtype, device
            ("base-old", "llm", "eager", "ok", 0, "tiny", 1, "float32", "cpu"),
            ("base-new", "llm", "eager", "ok", 5, "tiny", 1, "float32", "cpu"),
            ("base-failed", "llm", "eager", "failed", 9, "tiny", 1, "float32", "cpu"),
            ("sdpa-old", "llm", "sdpa", "ok", 1, "tiny", 1, "float32", "cpu"),
            ("sdpa-new", "llm", "sdpa", "ok", 6, "tiny", 1, "float32", "cpu"),
            ("sdpa-batch4", "llm", "sdpa", "ok", 7, "tiny", 4, "float32", "cpu"),
            ("int8-failed", "llm", "int8", "failed", 7, "tiny", 1, "float32", "cpu"),
            ("other-workload", "t2i", "sdpa", "ok", 8, "tiny", 1, "float32", "cpu"),
            ("sdpa-more-tokens", "llm", "sdpa", "ok", 9, "tiny", 1, "float32", "cpu"),  # newest, but other parameters
        ],
        columns=["run_id", "workload", "variant", "status", "minutes", "preset", "batch", "dtype", "device"],
    )
    runs["stored_at"] = at + pd.to_timedelta(runs.pop("minutes"), unit="min")
    tokens = runs["run_id"].map(lambda r: 64 if r == "sdpa-more-tokens" else 16)
    runs["settings_key"] = [f"{p}|{b}|{d}|{dev}|new_tokens={t}" for p, b, d, dev, t in
                            zip(runs.preset, runs.batch, runs.dtype, runs.device, tokens)]
    assert pair_latest(runs, "llm", "eager") == ("base-new", {"sdpa": "sdpa-new"})
    assert pair_latest(runs[runs["run_id"] != "base-new"], "llm", "eager") == ("base-old", {"sdpa": "sdpa-new"})
    with pytest.raises(ValueError, match="--workload llm: no successful 'int8'"):
        pair_latest(runs, "llm", "int8")
