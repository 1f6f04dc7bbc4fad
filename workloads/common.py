"""Helpers every adapter shares: device checks, seeding, placement, parameter counts,
profiler ranges, and a byte-level tokenizer built locally (no hub download)."""
from __future__ import annotations

import random

import torch
from torch.profiler import record_function


def resolve_device(name: str) -> torch.device:
    """The torch device for `--device name`; a clear error when it cannot be used here."""
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device: unknown device {name!r}; expected cpu or cuda[:index]") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device on this machine")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device: unsupported device {name!r}; expected cpu or cuda[:index]")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python and torch (CPU and every CUDA device) so random weights repeat."""
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Move a model to its device and dtype, for inference only."""
    module = module.to(device)
    if any(p.dtype != dtype for p in module.parameters()):  # skip a no-op cast: diffusers warns on any
        module = module.to(dtype)
    return module.eval().requires_grad_(False)


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so a clock read after this sees it finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def param_stats(*modules: torch.nn.Module) -> dict[str, int]:
    """param_count and param_bytes summed over the modules (shared tensors counted once)."""
    params = {id(p): p for module in modules for p in module.parameters()}.values()
    return {
        "param_count": sum(p.numel() for p in params),
        "param_bytes": sum(p.numel() * p.element_size() for p in params),
    }


def label_calls(module: torch.nn.Module, name: str) -> None:
    """Wrap every call of `module` in a profiler range `name`, so traces show it.

    Hooks rather than a wrapper module: callers (a diffusers pipeline) keep the real module
    and its config, and a compiled `forward` stays inside the range.
    """
    open_ranges: list[record_function] = []

    def enter(_module, _args):
        open_ranges.append(record_function(name))
        open_ranges[-1].__enter__()

    def leave(_module, _args, _output):
        open_ranges.pop().__exit__(None, None, None)

    module.register_forward_pre_hook(enter)
    module.register_forward_hook(leave, always_call=True)


def byte_level_clip_tokenizer(max_length: int = 77):
    """A CLIP tokenizer over the 256 byte symbols with no merges (one token per byte).

    Ids: 0 = <|startoftext|>, 1 = <|endoftext|> (also pad), then 512 byte symbols; every
    text encoder fed by it needs vocab_size >= 514. Built in memory: no files, no network.
    """
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    words = ["<|startoftext|>", "<|endoftext|>", *symbols, *(s + "</w>" for s in symbols)]
    vocab = {word: index for index, word in enumerate(words)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def compile_forward(module: torch.nn.Module) -> torch.nn.Module:
    """torch.compile the module's forward in place (default inductor mode, no graph breaks).

    Only `forward` is compiled, not the call: hooks (profiler ranges, recorders) stay eager
    and keep firing once per call. Static shapes: each input shape compiles its own graph.
    """
    module.forward = torch.compile(module.forward, fullgraph=True, dynamic=False)
    return module
