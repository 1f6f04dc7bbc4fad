"""FLOPs and bytes moved by one operator call, from the input shapes a trace records.

The FLOP formulas are PyTorch's own (torch.utils.flop_counter: mm, addmm, bmm, baddbmm,
convolution forward and backward, scaled dot-product attention forward and backward), called
with the shapes of the trace's "Input Dims"; linear and matmul are those formulas on the
reshaped operands. Operators the category rules call normalization count 5 FLOPs per input
element (mean, variance, normalize, scale and shift: fvcore's count), elementwise and activation
operators 1 per output element.

Bytes moved are the compulsory traffic: every tensor input read once and every output written
once, at the input's element size ("Input type"); where the trace records "Input Strides", a
broadcast dimension (stride 0) is read once. Without strides an expanded view counts whole, so a
memory-bound operator's share of the bandwidth peak can exceed 100%. A figure the trace cannot give (no shapes,
a dtype of unknown size, a convolution whose stride the trace does not carry) is None.
"""
from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from types import SimpleNamespace
from typing import Callable

from store.enrich import categorize, category_rules_path

ITEM_BYTES = {
    "float": 4, "double": 8, "c10::Half": 2, "c10::BFloat16": 2, "long int": 8, "int": 4, "short int": 2,
    "signed char": 1, "unsigned char": 1, "bool": 1, "c10::complex<float>": 8, "c10::complex<double>": 16,
    "c10::Float8_e4m3fn": 1, "c10::Float8_e5m2": 1, "c10::Float8_e4m3fnuz": 1, "c10::Float8_e5m2fnuz": 1,
}
PER_ELEMENT_FLOPS = {"normalization": 5, "activation": 1, "elementwise": 1}
# Autograd nodes (AddmmBackward0, CudnnConvolutionBackward) hold only the incoming gradient; the
# aten::*_backward operators they call carry the shapes.
AUTOGRAD_NODE = re.compile(r"^(?!autograd::)[^:]*Backward\d*$")



@lru_cache(maxsize=1)
def _fc() -> SimpleNamespace:
    """torch.utils.flop_counter, imported on first use (importing torch takes seconds; the store's readers need
    not pay it). Its registered formulas are called without their registration wrapper (which maps tensors to
    shapes through pytree: slow, and needless for shapes); they then take `out_shape=`."""
    from torch.utils import flop_counter

    raw = {name: getattr(getattr(flop_counter, name), "__wrapped__", getattr(flop_counter, name))
           for name in ("mm_flop", "addmm_flop", "bmm_flop", "baddbmm_flop", "conv_flop", "conv_backward_flop")}
    return SimpleNamespace(**raw, sdpa_flop_count=flop_counter.sdpa_flop_count, sdpa_backward_flop_count=flop_counter.sdpa_backward_flop_count)


@dataclass(frozen=True)
class Call:
    """One operator call as the trace has it."""
    name: str
    dims: list  # "Input Dims": a shape per argument, [] for scalars
    types: list  # "Input type": a dtype name per tensor argument
    concrete: list | None = None  # "Concrete Inputs": scalar arguments as text ('[2, 2]', 'False', '1')
    grad_out: list | None = None  # shape of the gradient of the output (its autograd node's input), if known
    descendants: frozenset = field(default_factory=frozenset)  # names of the operators it called
    strides: list | None = None  # "Input Strides", where recorded: a broadcast (stride 0) dimension is read once

    def tensor_arguments(self) -> list[tuple[int, list, str]]:
        """(position, shape, dtype) of each tensor argument (a 0-d tensor has shape [])."""
        return [(i, d, t) for i, (d, t) in enumerate(zip(self.dims, self.types))
                if t in ITEM_BYTES and isinstance(d, list) and all(isinstance(x, int) for x in d)]

    def tensors(self) -> list[tuple[list, str]]:
        return [(d, t) for _, d, t in self.tensor_arguments()]

    def read_elements(self) -> int:
        """Elements read from the tensor arguments: each one's size, a dimension of stride 0 (an expanded view) once."""
        total = 0
        for index, shape, _ in self.tensor_arguments():
            stride = self.strides[index] if isinstance(self.strides, list) and index < len(self.strides) else None
            if isinstance(stride, list) and len(stride) == len(shape):
                total += math.prod(size for size, step in zip(shape, stride) if step != 0)
            else:
                total += math.prod(shape)
        return total

    def argument(self, index: int):
        """A scalar argument from Concrete Inputs as a Python value; None when the trace lacks it."""
        if not self.concrete or index >= len(self.concrete) or self.concrete[index] in ("", None):
            return None
        try:
            return ast.literal_eval(self.concrete[index])
        except (ValueError, SyntaxError):
            return None


# -- shapes ------------------------------------------------------------------------------
def broadcast(*shapes: list) -> list | None:
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(-rank, 0):
        sizes = {s[axis] for s in shapes if len(s) >= -axis} - {1}
        if len(sizes) > 1:
            return None
        out.append(sizes.pop() if sizes else 1)
    return out


def conv_output(x: list, w: list, stride, padding, dilation, transposed: bool, output_padding=0, groups=1) -> list | None:
    """Output shape of a convolution from its arguments (each an int or a list per spatial dim)."""
    spatial = len(x) - 2

    def per_dim(value, default):
        value = default if value is None else value
        return [value] * spatial if isinstance(value, int) else list(value) * (spatial if len(value) == 1 else 1)

    if stride is None or padding is None or isinstance(padding, str):
        return None  # not in the trace, or 'same'/'valid' padding given by name
    s, p, d, op = per_dim(stride, 1), per_dim(padding, 0), per_dim(dilation, 1), per_dim(output_padding, 0)
    k = w[2:]
    if transposed:  # weight: [in, out / groups, k...]
        return [x[0], w[1] * (groups or 1), *((x[2 + i] - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1 for i in range(spatial))]
    return [x[0], w[0], *((x[2 + i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(spatial))]


def _attention_4d(shape: list) -> list:
    """[batch, heads, length, dim] as flop_counter's attention formulas take it; other ranks fold the leading dims into batch."""
    return list(shape) if len(shape) == 4 else [math.prod(shape[:-2]), 1, *shape[-2:]]


# -- formulas: (flops, output shapes) of a call ----------------------------------------------
def _mm(c: Call):
    a, b = c.dims[0], c.dims[1]
    return _fc().mm_flop(a, b), [[a[0], b[1]]]


def _addmm(c: Call):
    a, b = c.dims[1], c.dims[2]
    return _fc().addmm_flop(c.dims[0], a, b), [[a[0], b[1]]]


def _bmm(c: Call):
    a, b = c.dims[0], c.dims[1]
    return _fc().bmm_flop(a, b), [[a[0], a[1], b[2]]]


def _baddbmm(c: Call):
    a, b = c.dims[1], c.dims[2]
    return _fc().baddbmm_flop(c.dims[0], a, b), [[a[0], a[1], b[2]]]


def _linear(c: Call):
    x, w = c.dims[0], c.dims[1]  # weight: [out_features, in_features]
    rows = math.prod(x[:-1])
    return _fc().mm_flop([rows, x[-1]], [w[1], w[0]]), [[*x[:-1], w[0]]]


def _matmul(c: Call):
    a, b = list(c.dims[0]), list(c.dims[1])
    a2, b2 = ([1] + a if len(a) == 1 else a), (b + [1] if len(b) == 1 else b)
    batch = broadcast(a2[:-2], b2[:-2])
    n = math.prod(batch)
    out = [*batch, *([a2[-2]] if len(a) > 1 else []), *([b2[-1]] if len(b) > 1 else [])]
    return _fc().bmm_flop([n, a2[-2], a2[-1]], [n, b2[-2], b2[-1]]), [out]


def _conv(positions: tuple[int, int, int], transposed: bool | int, output_padding: int | None = None, groups: int | None = None):
    """A forward convolution whose stride, padding and dilation are the arguments at `positions`; `transposed`
    a bool, or the index of the argument that says it."""
    def formula(c: Call):
        x, w = c.dims[0], c.dims[1]
        is_transposed = transposed if isinstance(transposed, bool) else bool(c.argument(transposed))
        extra = [c.argument(i) if i is not None else None for i in (output_padding, groups)]
        out = conv_output(x, w, *(c.argument(i) for i in positions), is_transposed, extra[0] or 0, extra[1] or 1)
        out = out or c.grad_out  # without Concrete Inputs: the shape its autograd node received
        if out is None:
            return None, None
        return _fc().conv_flop(x, w, None, None, None, None, is_transposed, out_shape=out), [out]
    return formula


def _conv_backward(c: Call):
    """aten::convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed, output_padding, groups, output_mask)."""
    g, x, w = c.dims[0], c.dims[1], c.dims[2]
    mask = c.argument(10)
    if mask is None:
        return None, None
    flops = _fc().conv_backward_flop(g, x, w, None, None, None, None, bool(c.argument(7)), None, None, mask, out_shape=[x, w])
    return flops, [s for s, m in zip((x, w), mask) if m]


def _cudnn_conv_backward(c: Call):
    """Legacy aten::cudnn_convolution_backward(input, grad_output, weight, ...): which gradients it computed
    shows in the operators it called (cudnn_convolution_backward_input / _weight)."""
    x, g, w = c.dims[0], c.dims[1], c.dims[2]
    mask = [any(n.endswith("backward_input") for n in c.descendants), any(n.endswith("backward_weight") for n in c.descendants)]
    if not any(mask):
        return None, None
    return _fc().conv_backward_flop(g, x, w, None, None, None, None, False, None, None, mask, out_shape=[x, w]), [s for s, m in zip((x, w), mask) if m]


def _sdpa(c: Call):
    q, k, v = (_attention_4d(s) for s in c.dims[:3])
    return _fc().sdpa_flop_count(q, k, v), [[*c.dims[0][:-1], c.dims[2][-1]]]


def _sdpa_backward(c: Call):
    g, q, k, v = (_attention_4d(s) for s in c.dims[:4])
    return _fc().sdpa_backward_flop_count(g, q, k, v), [c.dims[1], c.dims[2], c.dims[3]]


_SDPA = ("aten::scaled_dot_product_attention", "aten::_scaled_dot_product_flash_attention", "aten::_scaled_dot_product_efficient_attention",
         "aten::_scaled_dot_product_cudnn_attention", "aten::_scaled_dot_product_flash_attention_for_cpu")
FORMULAS: dict[str, tuple[str, Callable]] = {
    "aten::mm": ("gemm", _mm), "aten::addmm": ("gemm", _addmm), "aten::bmm": ("gemm", _bmm), "aten::baddbmm": ("gemm", _baddbmm),
    "aten::linear": ("gemm", _linear), "aten::matmul": ("gemm", _matmul),
    # conv1d/2d/3d(input, weight, bias, stride, padding, dilation, groups)
    **{f"aten::conv{n}d": ("convolution", _conv((3, 4, 5), False)) for n in (1, 2, 3)},
    # conv_transpose{n}d(input, weight, bias, stride, padding, output_padding, groups, dilation)
    **{f"aten::conv_transpose{n}d": ("convolution", _conv((3, 4, 7), True, 5, 6)) for n in (1, 2, 3)},
    # convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
    **{n: ("convolution", _conv((3, 4, 5), 6, 7, 8)) for n in ("aten::convolution", "aten::_convolution", "aten::convolution_overrideable")},
    "aten::convolution_backward": ("convolution", _conv_backward),
    "aten::cudnn_convolution_backward": ("convolution", _cudnn_conv_backward),
    **{n: ("attention", _sdpa) for n in _SDPA},
    **{n + "_backward": ("attention", _sdpa_backward) for n in _SDPA[1:]},
}


def family_of(name: str) -> str | None:
    """gemm, convolution, attention (FORMULAS), normalization, activation or elementwise (the category rules,
    for operators that are not autograd nodes); None otherwise."""
    return _family(name, category_rules_path())


@lru_cache(maxsize=65536)
def _family(name: str, rules_path) -> str | None:
    if name in FORMULAS:
        return FORMULAS[name][0]
    if AUTOGRAD_NODE.match(name) or name.startswith("autograd::"):  # nodes and the engine's ranges around them
        return None
    category = categorize(name, False, rules_path)
    return category if category in PER_ELEMENT_FLOPS else None


def _per_element(c: Call, family: str):
    tensors = c.tensors()
    if not tensors:
        return None, None
    if family == "normalization":
        shape = tensors[0][0]
        return PER_ELEMENT_FLOPS[family] * math.prod(shape), [shape]
    out = broadcast(*(s for s, _ in tensors))
    if out is None:
        return None, None
    return PER_ELEMENT_FLOPS[family] * math.prod(out), [out]


def flops_and_bytes(call: Call, family: str | None = None) -> tuple[int | None, int | None]:
    """(FLOPs, bytes moved) of one call (its family_of, if the caller has it); None for what its recorded inputs cannot give."""
    family = family or family_of(call.name)
    tensors = call.tensors()
    if family is None or not tensors:
        return None, None
    try:
        flops, outputs = FORMULAS[call.name][1](call) if call.name in FORMULAS else _per_element(call, family)
    except (AssertionError, IndexError, TypeError, ValueError, ZeroDivisionError):
        return None, None  # shapes the formula does not take (a list argument, a mismatch): absent
    if flops is None:
        return None, None
    item = ITEM_BYTES[tensors[0][1]]
    if len({t for _, t in tensors}) == 1:  # one dtype: expanded views count once
        read = call.read_elements() * item
    else:
        read = sum(math.prod(s) * ITEM_BYTES[t] for s, t in tensors)
    return int(flops), int(read + sum(math.prod(s) * item for s in outputs))
