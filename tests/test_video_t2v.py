"""video-t2v: the video and its denoising loop, fused vs unfused attention, spatial and temporal
attention told apart (recorded per call, timed per module from a profiled run), and the paper
preset's ModelScope dimensions."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from profilers.parts import untimed_part
from profilers.seqlen import SeqLenRecorder
from workloads import diffusion_t2i, video_t2v
from workloads.base import RunOptions, get

_RUNS: dict[tuple, tuple] = {}


def run(variant: str, **params):
    """Build and run one iteration, once per (variant, params) for the whole module."""
    key = (variant, tuple(sorted(params.items())))
    if key not in _RUNS:
        workload = get("video-t2v")
        spec = workload.resolve(RunOptions(variant=variant, params=params))
        built = workload.build(spec)
        _RUNS[key] = (spec, built, built.iteration(untimed_part))
    return _RUNS[key]


def test_video_shape_and_one_unet_forward_per_denoising_step():
    spec, built, video = run("eager", frames=4)
    p = spec.params
    assert video.shape == (1, 3, 4, p.image_size, p.image_size) and 0 <= video.min() and video.max() <= 1
    batches = []
    handle = built.model.register_forward_pre_hook(lambda _m, args: batches.append(tuple(args[0].shape)))
    try:
        again = built.iteration(untimed_part)
    finally:
        handle.remove()
    latent = p.image_size // 2
    assert batches == [(2, 4, 4, latent, latent)] * p.denoising_steps, "classifier-free guidance: batch 2, 5-D latents"
    assert torch.equal(again, video), "the same latents every iteration"
    assert built.items == 4 and built.item_unit == "frames"


def test_sdpa_matches_eager():
    (_, eager, reference), (_, fused, video) = run("eager", frames=4), run("sdpa", frames=4)
    assert eager.info["attn_processor"] == "AttnProcessor" and fused.info["attn_processor"] == "AttnProcessor2_0"
    torch.testing.assert_close(video, reference, atol=1e-4, rtol=1e-4)


def test_frames_are_decoded_as_independent_images():
    _, built, _ = run("eager", frames=4)
    pipe = SimpleNamespace(vae=built.recorded_modules["vae"])
    latents = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        together = video_t2v.decode_frames(pipe, latents)
        alone = [video_t2v.decode_frames(pipe, latents[:, :, i:i + 1]) for i in range(3)]
    torch.testing.assert_close(together, torch.cat(alone, dim=2), atol=1e-5, rtol=1e-5)


def test_attention_is_spatial_within_a_frame_and_temporal_across_frames():
    spec, built, _ = run("sdpa", frames=4)
    with SeqLenRecorder(built.recorded_modules, model=built.model) as recorder:
        built.iteration(untimed_part)
    unet = [r for r in recorder.rows if r["module_path"].startswith("unet.") and r["model_call"] == 0]
    temporal = [r for r in unet if r["axis"] == "temporal"]
    spatial = [r for r in unet if r["axis"] == "spatial"]
    assert {r["module_path"].split(".")[1] for r in temporal} >= {"transformer_in", "down_blocks", "mid_block", "up_blocks"}
    assert all(".temp_attentions." in r["module_path"] or r["module_path"].startswith("unet.transformer_in.") for r in temporal)
    assert all(".attentions." in r["module_path"] for r in spatial)
    latent = spec.params.image_size // 2
    # temporal: a sequence of frames at each position of each video; spatial: the positions of each frame
    assert {(r["kind"], r["q_len"], r["kv_len"]) for r in temporal} == {("self", 4, 4)}
    assert {r["batch"] for r in temporal} == {2 * latent * latent, 2 * (latent // 2) ** 2}
    assert {r["q_len"] for r in spatial} == {latent * latent, (latent // 2) ** 2}
    assert {r["batch"] for r in spatial} == {2 * 4}
    assert {r["kv_len"] for r in spatial if r["kind"] == "cross"} == {77}


def test_frames_parameter_is_checked():
    with pytest.raises(ValueError, match="--param frames must be at least 1"):
        get("video-t2v").resolve(RunOptions(params={"frames": 0}))


def test_attention_time_per_axis_from_a_profiled_run(tmp_path):
    """The profiled run's attention:: ranges give each module's time; its attention operators add
    up to op_time_by_category's attention time; the parts' operators to the parts' names."""
    from app.runner import RunRequest, execute
    from store.analysis import attention_time, op_time_by_category
    from store.analysis.categories import op_time_by_part
    from store.analysis.studies import add_study_views, figure_frame, get_study, judge
    from store.db import Store

    store = Store(tmp_path / "o.duckdb")
    options = RunOptions(variant="sdpa", params={"frames": 2, "denoising_steps": 1})
    run_id = execute(store, RunRequest("video-t2v", options, repeats=1, warmup=0, active_iterations=1))
    with store.connect_runs([run_id]) as con:
        times = attention_time(con, run_id, side="cpu")
        categories = op_time_by_category(con, run_id, side="cpu").set_index("category")
        parts = op_time_by_part(con, run_id, side="cpu")
        add_study_views(con)
        study = get_study("genai-suite")
        verdicts = {f.id: judge(con, f, on_gpu=False)["verdict"] for f in study.findings}
        figures = [figure_frame(con, f.figure) for f in study.findings if f.figure is not None]
    unet = times[times["module_path"].str.startswith("unet.")]
    assert set(unet["axis"]) == {"spatial", "temporal"} and (unet["calls"] == 1).all()
    assert (unet.loc[unet["axis"] == "temporal", "module_path"].str.contains("temp_attentions|transformer_in")).all()
    assert (times["self_us"] <= times["time_us"]).all() and (times["attention_us"] <= times["self_us"] + 1e-6).all()
    assert times["attention_us"].sum() == pytest.approx(categories.loc["attention", "time_us"])
    assert set(parts["part"]) == {"text_encoder", "unet", "scheduler", "vae"}
    assert parts["time_us"].sum() <= categories["time_us"].sum() + 1e-6
    # one run of the study: its findings all run, and those without their runs say so
    assert verdicts["temporal-share"] == "no data" and verdicts["fused-speedup"] == "no data"
    assert len(figures) == 4 and {"frames", "temporal_pct"} <= set(figures[2].columns) and len(figures[2]) == 1


def test_paper_preset_is_modelscope():
    from diffusers import UNet3DConditionModel

    p, params = video_t2v.PRESETS["paper"], video_t2v.PARAMS["paper"]
    assert (params.frames, params.image_size, params.denoising_steps) == (16, 256, 50)
    with torch.device("meta"):
        unet = UNet3DConditionModel(**diffusion_t2i.unet_config(p, params.image_size))
    assert round(sum(t.numel() for t in unet.parameters()) / 1e9, 2) == 1.41  # ModelScope's UNet3D
    assert unet.config.sample_size == 32 and unet.transformer_in.transformer_blocks[0].attn1.heads == 8
    assert unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.heads == 5  # 320 channels / 64 per head
