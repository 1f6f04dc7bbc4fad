"""Helpers every adapter shares: seeding, placement, parameter counts, profiler ranges, a
byte-level tokenizer built locally (no hub download), weight-only int8, and training state."""
from __future__ import annotations

import random
from contextlib import contextmanager

import torch
from torch.profiler import record_function


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


class ModuleParts:
    """Parts marked at module boundaries, for one forward that runs its stages itself (a library
    model whose forward cannot be split into explicit calls).

        marks = ModuleParts()
        marks.switch_at(model, "esm_stem")                                  # the forward starts in esm_stem
        marks.switch_at(model.trunk, "trunk", on_leave="heads")
        marks.switch_at(model.trunk.structure_module, "structure_module", on_leave="trunk")
        with marks.run(part):                                               # inside an iteration
            model(...)

    Entering a marked module switches to `on_enter`, leaving it to `on_leave` (if given): every
    switch closes the open part first, so parts never nest and cover the whole forward; `run`
    closes the last one. Outside `run` (a forward outside an iteration) the hooks do nothing.
    """

    def __init__(self) -> None:
        self._part = None
        self._open = None

    def switch_at(self, module: torch.nn.Module, on_enter: str, on_leave: str | None = None) -> None:
        module.register_forward_pre_hook(lambda _module, _args: self.switch(on_enter))
        if on_leave is not None:
            module.register_forward_hook(lambda _module, _args, _output: self.switch(on_leave), always_call=True)

    def switch(self, name: str | None) -> None:
        """Close the open part; open `name` (None: stay outside every part)."""
        if self._part is None:
            return
        if self._open is not None:
            opened, self._open = self._open, None
            opened.__exit__(None, None, None)
        if name is not None:
            self._open = self._part(name)
            self._open.__enter__()

    @contextmanager
    def run(self, part):
        """Mark the parts of the forwards inside this block with `part` (the iteration's part timer)."""
        self._part = part
        try:
            yield
        finally:
            self.switch(None)
            self._part = None


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


class WeightOnlyInt8Linear(torch.nn.Module):
    """A linear layer whose weight is int8 with one scale per output channel (gpt-fast's
    quantize.py): a quarter of float32's bytes; dequantized inside the matmul."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp(min=1e-8) / 127
        self.register_buffer("weight", torch.round(weight / scales[:, None]).to(torch.int8))
        self.register_buffer("scales", scales.to(linear.weight.dtype))
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.nn.functional.linear(x, self.weight.to(x.dtype)) * self.scales
        return out if self.bias is None else out + self.bias


def quantize_int8_weights(model: torch.nn.Module) -> torch.nn.Module:
    """Replace every nn.Linear under `model` by WeightOnlyInt8Linear, in place."""
    for name, child in list(model.named_children()):
        if isinstance(child, torch.nn.Linear):
            setattr(model, name, WeightOnlyInt8Linear(child))
        else:
            quantize_int8_weights(child)
    return model


def tensor_bytes(tensors) -> int:
    """Bytes of distinct storages among `tensors` (shared storage counted once)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors if isinstance(t, torch.Tensor)}
    return sum(storages.values())


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes the optimizer keeps per parameter (Adam's two moments, ...), measured from its state."""
    return tensor_bytes(v for state in optimizer.state.values() for v in state.values())


class TrainingState:
    """A snapshot of a model's weights and its optimizer's state, restored before each timed
    repeat so every repeat trains from the same point (no drift between repeats)."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
        import copy

        self.model, self.optimizer = model, optimizer
        self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.optimizer_state = copy.deepcopy(optimizer.state_dict())

    @torch.no_grad()
    def restore(self) -> None:
        for key, value in self.model.state_dict().items():
            value.copy_(self.weights[key])
        self.optimizer.load_state_dict(self.optimizer_state)
        self.optimizer.zero_grad(set_to_none=True)


def training_info(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """trainable_param_count and the optimizer's state bytes (exists once a step ran)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return {
        "trainable_param_count": sum(p.numel() for p in trainable),
        "trainable_param_bytes": sum(p.numel() * p.element_size() for p in trainable),
        "optimizer_state_bytes": optimizer_state_bytes(optimizer),
    }
