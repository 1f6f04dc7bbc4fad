"""sd-adapters: Stable Diffusion served with ControlNets and LoRAs (studies.md section 4, SwiftDiffusion).

diffusion-t2i's pipeline (random weights; SDPA attention, as diffusers runs by default) with
`controlnets` ControlNets (0-3: ControlNetModel.from_unet, each with its own random control
image) and `loras` LoRAs (0-2: peft layers of rank `lora_rank` on the UNet's attention,
projection and feed-forward layers, random non-zero weights, written at build to safetensors
files as users download them). One iteration = one request, as numbered steps, a part each:
1. the LoRA files read ("adapter_load") and patched into the UNet as peft layers ("lora_patch");
2. the prompt encoded ("text_encoder");
3. each denoising step: the ControlNets one after another on the step's latents (both
   guidance branches), residuals summed ("controlnet"); the UNet with the residuals and the
   unmerged LoRA layers ("unet"); the scheduler ("scheduler");
4. VAE decode ("vae");
5. the LoRA layers removed, so the next request starts from the plain UNet ("lora_unload").
The files are read from the OS page cache after the first request (a warm local disk).

Variants, each one SwiftDiffusion technique stacked on the baseline `diffusers-baseline`:
- fused-lora: the LoRAs merged into the UNet's weights after patching ("lora_merge") and
  un-merged before unloading ("lora_unmerge"): no LoRA compute left in the UNet steps.
- async-lora: fused-lora, but the files are read on a thread (background part "adapter_load")
  while the text encoder and the first `async_steps` steps run without the LoRAs; then the
  request waits for the thread ("adapter_wait"), patches and merges. Changes the output.
- parallel-controlnet: the ControlNets run beside the UNet's encoder half (another process
  on a CPU, another stream on a GPU): see workloads/controlnet_parallel.py.
What a variant costs in output: the request's final latents against the baseline's at the
same settings (one baseline request run at build), as numerics rows of subject
"final_latents": max_abs_diff, cosine_similarity, and reference_max_abs for scale.
"""
from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from profilers.parts import untimed_part
from workloads.base import Built, RunSpec, Workload, register
from workloads.common import param_stats, place, seed_everything
from workloads.controlnet_parallel import controlnet_residuals, overlap_with_unet
from workloads.diffusion_t2i import PRESETS, ImageParams, build_pipeline, decode, image_latents, pipeline_info, use_sdpa

# Kohya-style SD 1.5 LoRA targets: every linear (and 1x1 conv) layer of the UNet's transformer blocks.
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
LORA_METADATA_KEY = "lora_adapter_metadata"  # where diffusers' save_lora_adapter puts the LoraConfig


@dataclass(frozen=True)
class AdapterParams(ImageParams):
    controlnets: int = 1
    loras: int = 1
    lora_rank: int = 4
    async_steps: int = 1  # async-lora: denoising steps run before the LoRAs are applied

    def check(self) -> None:
        super().check()
        if not 0 <= self.controlnets <= 3:
            raise ValueError(f"--param controlnets must be 0 to 3, got {self.controlnets}")
        if not 0 <= self.loras <= 2:
            raise ValueError(f"--param loras must be 0 to 2, got {self.loras}")
        if self.lora_rank < 1:
            raise ValueError(f"--param lora_rank must be at least 1, got {self.lora_rank}")
        if not 0 <= self.async_steps < self.denoising_steps:
            raise ValueError(f"--param async_steps must be 0 to denoising_steps - 1 ({self.denoising_steps - 1}): "
                             f"the LoRAs are applied before that step, got {self.async_steps}")


PARAMS = {
    # 32x32 images: 16x16 latents (256 tokens in the first attention level), 2 steps, the LoRA after the first.
    "tiny": AdapterParams(image_size=32, denoising_steps=2, controlnets=1, loras=1, lora_rank=4, async_steps=1),
    # SD 1.5 at 512x512, 50 DDIM steps, one SD 1.5 ControlNet (361M parameters), one rank-128
    # LoRA (54M parameters, 207 MiB in float32: "hundreds of MiB"), applied after 5 steps (10%) by async-lora.
    "paper": AdapterParams(image_size=512, denoising_steps=50, controlnets=1, loras=1, lora_rank=128, async_steps=5),
}


# --- the adapters ----------------------------------------------------------------------------

def make_controlnets(unet, count: int, vae_levels: int):
    """`count` ControlNets copied from the UNet's encoder (MultiControlNetModel sums their residuals).

    from_unet zero-initializes the convs that emit residuals (and the control image's last
    conv), so a fresh ControlNet adds exactly 0: they get random weights here, as a trained one has.
    Its conditioning embedding downsamples the control image as the VAE does the image.
    """
    from diffusers import ControlNetModel
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    nets = []
    for _ in range(count):
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 96, 256)[:vae_levels])
        for conv in (*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out):
            torch.nn.init.normal_(conv.weight, std=0.02)
        nets.append(net)
    return MultiControlNetModel(nets)


def write_lora_files(unet, count: int, rank: int, folder: Path) -> list[Path]:
    """`count` LoRAs with random weights (non-zero up-projections), each a safetensors file in
    diffusers' layout (what save_lora_adapter writes: peft keys, the LoraConfig in the metadata);
    the UNet is left plain."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    files = []
    for index in range(count):
        name = f"lora_{index}"
        config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False, target_modules=list(LORA_TARGETS))
        unet.add_adapter(config, adapter_name=name)
        metadata = {"format": "pt", LORA_METADATA_KEY: json.dumps(config.to_dict(), default=list, sort_keys=True)}
        files.append(folder / f"{name}.safetensors")
        save_file(get_peft_model_state_dict(unet, adapter_name=name), files[-1], metadata=metadata)
        unet.unload_lora()
    return files


def read_loras(files: list[Path], device: torch.device) -> list[tuple[dict, dict]]:
    """Each LoRA file's tensors, on the device, and its LoraConfig."""
    from safetensors import safe_open

    loras = []
    for path in files:
        with safe_open(path, framework="pt", device=str(device)) as f:
            loras.append(({key: f.get_tensor(key) for key in f.keys()}, json.loads(f.metadata()[LORA_METADATA_KEY])))
    return loras


class BackgroundRead:
    """The LoRA files read on a thread while the request goes on (background part "adapter_load")."""

    def __init__(self, files: list[Path], device: torch.device, part):
        self.loras: list | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._read, args=(files, device, part), name="lora-read", daemon=True)
        self.thread.start()

    def _read(self, files, device, part) -> None:
        try:
            with part("adapter_load", background=True):
                self.loras = read_loras(files, device)
        except BaseException as exc:  # re-raised in the request's thread by result()
            self.error = exc

    def result(self) -> list[tuple[dict, dict]]:
        self.thread.join()
        if self.error is not None:
            raise RuntimeError(f"reading the LoRA files failed: {self.error!r}") from self.error
        return self.loras


# --- one request -------------------------------------------------------------------------------

@dataclass
class Server:
    """What a request runs on, and how: each variant replaces one of the last three fields."""

    spec: RunSpec
    pipe: Any
    controlnets: Any | None  # MultiControlNetModel, or None without ControlNets
    control_images: list[torch.Tensor]  # one per ControlNet, for both guidance branches
    lora_files: list[Path]
    merge: bool = False  # fused-lora: merge the LoRAs into the weights
    async_steps: int | None = None  # async-lora: the LoRAs applied before this step; None: before the request
    run_step: Callable | None = None  # (unet_forward, latents, t, embeddings, part) -> noise; None: serial
    last_latents: torch.Tensor | None = None  # the final latents of the last request

    def serial_step(self, unet_forward, latents, t, embeddings, part):
        """diffusers' way: the ControlNets one after another, then the UNet."""
        down = mid = None
        if self.controlnets is not None:
            with part("controlnet"):
                down, mid = controlnet_residuals(self.controlnets, self.control_images, latents, t, embeddings)
        with part("unet"):
            return unet_forward(down, mid)


def apply_loras(s: Server, loras: list[tuple[dict, dict]], part) -> None:
    names = [f"lora_{index}" for index in range(len(loras))]
    with part("lora_patch"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Already found a `peft_config`")  # a second LoRA: what we mean
        for name, (state, config) in zip(names, loras):
            s.pipe.unet.load_lora_adapter(state, prefix=None, adapter_name=name, metadata=config)
        s.pipe.unet.set_adapters(names, weights=[1.0] * len(names))
    if s.merge:
        with part("lora_merge"):
            s.pipe.unet.fuse_lora(adapter_names=names)


def remove_loras(s: Server, part) -> None:
    if s.merge:
        with part("lora_unmerge"):
            s.pipe.unet.unfuse_lora()
    with part("lora_unload"):
        s.pipe.unet.unload_lora()


def serve(s: Server, part) -> torch.Tensor:
    """One request: the numbered steps of the module's docstring."""
    spec, unet, loader = s.spec, s.pipe.unet, None
    # 1. adapters: before the request, or read in the background and applied mid-way
    if s.lora_files and s.async_steps is None:
        with part("adapter_load"):
            loras = read_loras(s.lora_files, spec.torch_device)
        apply_loras(s, loras, part)
    elif s.lora_files:
        loader = BackgroundRead(s.lora_files, spec.torch_device, part)

    def step(latents, t, embeddings, index):
        if loader is not None and index == s.async_steps:
            with part("adapter_wait"):
                loras = loader.result()
            apply_loras(s, loras, part)

        def unet_forward(down, mid):
            return unet(latents, t, encoder_hidden_states=embeddings, down_block_additional_residuals=down,
                        mid_block_additional_residual=mid, return_dict=False)[0]
        return (s.run_step or s.serial_step)(unet_forward, latents, t, embeddings, part)

    # 2.-4. text, denoising steps (each marks its own parts), decode
    latents = image_latents(s.pipe, spec, part, step, unet_part=None)
    image = decode(s.pipe, spec, part, latents)
    # 5. back to the plain UNet
    if s.lora_files:
        remove_loras(s, part)
    s.last_latents = latents
    return image


# --- variants: each applies one technique ------------------------------------------------------

def merge_loras(s: Server) -> Server:
    """LoRA weights merged in place (diffusers' fuse_lora) after patching, un-merged at the end."""
    return replace(s, merge=True)


def load_loras_async(s: Server) -> Server:
    """LoRA files read on a thread while the first `async_steps` denoising steps run without them."""
    return replace(s, async_steps=s.spec.params.async_steps)


def controlnets_in_parallel(s: Server) -> Server:
    """ControlNets beside the UNet's encoder half: a worker process on a CPU, a second stream on a GPU."""
    if s.controlnets is None:
        return s
    p, config = s.spec.params, s.pipe.unet.config
    rows, size = 2 * s.spec.batch, p.image_size // s.pipe.vae_scale_factor
    device, dtype = s.spec.torch_device, s.spec.torch_dtype
    example = (torch.zeros(rows, config.in_channels, size, size, device=device, dtype=dtype),
               torch.tensor(1, device=device),
               torch.zeros(rows, s.pipe.tokenizer.model_max_length, config.cross_attention_dim, device=device, dtype=dtype))
    runner = overlap_with_unet(s.pipe.unet, s.controlnets, s.control_images, example, device)
    return replace(s, run_step=runner)


VARIANTS = {
    "diffusers-baseline": (),
    "fused-lora": (merge_loras,),
    "async-lora": (merge_loras, load_loras_async),
    "parallel-controlnet": (controlnets_in_parallel,),
}


class CpuTime:
    """Process CPU time of each request and of each UNet forward. On a shared CPU, wall time is
    largely waiting for a core; CPU time is the work done (a worker process's not included)."""

    def __init__(self, unet):
        self.requests_ns: list[int] = []
        self.unet_ns: list[int] = []
        unet.register_forward_pre_hook(self._start)
        unet.register_forward_hook(self._stop)

    def _start(self, *_) -> None:
        self._started = time.process_time_ns()

    def _stop(self, *_) -> None:
        self.unet_ns.append(time.process_time_ns() - self._started)

    def figures(self) -> dict[str, float]:
        return {"request_cpu_us": statistics.median(self.requests_ns) / 1e3, "unet_forward_cpu_us": statistics.median(self.unet_ns) / 1e3}


def latent_numerics(latents: torch.Tensor, reference: torch.Tensor) -> list[dict]:
    a, b = latents.double().flatten(), reference.double().flatten()
    figures = {"max_abs_diff": (a - b).abs().max(), "cosine_similarity": torch.nn.functional.cosine_similarity(a, b, dim=0),
               "reference_max_abs": b.abs().max()}
    return [{"subject": "final_latents", "metric": name, "value": float(value), "position": None} for name, value in figures.items()]


def build_server(spec: RunSpec) -> Server:
    """The baseline's server: pipeline, ControlNets and control images, LoRA files (deleted with the pipeline)."""
    p, dims, device = spec.params, PRESETS[spec.preset], spec.torch_device
    seed_everything(spec.seed)
    pipe = use_sdpa(build_pipeline(dims, p.image_size, device, spec.torch_dtype))
    controlnets = place(make_controlnets(pipe.unet, p.controlnets, len(dims.vae_channels)), device, spec.torch_dtype) if p.controlnets else None
    generator = torch.Generator().manual_seed(spec.seed)
    images = [torch.rand(spec.batch, 3, p.image_size, p.image_size, generator=generator).repeat(2, 1, 1, 1).to(device, spec.torch_dtype)
              for _ in range(p.controlnets)]
    folder = Path(tempfile.mkdtemp(prefix="sd-adapters-"))
    weakref.finalize(pipe, shutil.rmtree, folder, True)
    return Server(spec, pipe, controlnets, images, write_lora_files(pipe.unet, p.loras, p.lora_rank, folder))


def build(spec: RunSpec) -> Built:
    server = build_server(spec)
    serve(server, untimed_part)  # the baseline's request: the reference for what a variant changes
    reference = server.last_latents
    for technique in VARIANTS[spec.variant]:
        server = technique(server)
    pipe, controlnets, files = server.pipe, server.controlnets, server.lora_files
    lora_params = sum(t.numel() for state, _ in read_loras(files[:1], torch.device("cpu")) for t in state.values())
    info = {
        **pipeline_info(pipe, spec),
        **param_stats(*(m for m in (pipe.unet, pipe.text_encoder, pipe.vae, controlnets) if m is not None)),
        "controlnet_param_count": param_stats(controlnets)["param_count"] if controlnets is not None else 0,
        "lora_param_count": lora_params * spec.params.loras,
        "lora_file_bytes": sum(f.stat().st_size for f in files),
        "lora_targets": ",".join(LORA_TARGETS),
    }
    waits_us = []  # parallel-controlnet: per request, the time the UNet waited for the residuals
    cpu = CpuTime(pipe.unet)

    def iteration(part):
        waited, started = getattr(server.run_step, "waited_ns", 0), time.process_time_ns()
        image = serve(server, part)
        cpu.requests_ns.append(time.process_time_ns() - started)
        info.update(cpu.figures())
        if server.run_step is not None:
            waits_us.append((server.run_step.waited_ns - waited) / 1e3)
            info["controlnet_wait_us"] = statistics.median(waits_us)
        return image

    return Built(
        iteration=iteration,
        items=spec.batch,
        item_unit="images",
        model=pipe.unet,  # one UNet forward per denoising step
        recorded_modules={"text_encoder": pipe.text_encoder, "unet": pipe.unet, "vae": pipe.vae,
                          **({"controlnets": controlnets} if controlnets is not None else {})},
        numerics=lambda: latent_numerics(server.last_latents, reference),
        info=info,
    )


WORKLOAD = register(Workload(
    name="sd-adapters",
    study="4",
    description="Stable Diffusion serving requests with 0-3 ControlNets and 0-2 LoRAs loaded per request; fused, asynchronous and parallel adapters",
    kind="inference",
    presets=PARAMS,
    variants=tuple(VARIANTS),
    build=build,
))
