"""SeqLenRecorder on tiny real models: the recorded shapes must be the ones the configs imply."""
from __future__ import annotations

import inspect
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from profilers.seqlen import ROW_COLUMNS, SeqLenRecorder

SAMPLE = 16  # latent side: level 0 attends over 16*16 tokens, level 1 over 8*8
TEXT_LEN = 7
BLOCKS = (32, 64)


@pytest.fixture(scope="module")
def unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=SAMPLE, in_channels=4, out_channels=4, block_out_channels=BLOCKS, layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=16,
    ).eval()


def _unet_step(unet, timestep: int = 10):
    latents = torch.randn(2, 4, SAMPLE, SAMPLE)  # batch 2: classifier-free guidance
    text = torch.randn(2, TEXT_LEN, 32)
    with torch.no_grad():
        return unet(latents, timestep, text)


def _level(path: str, levels: int) -> int:
    """Resolution level of an attention module from its UNet path (0 = full resolution)."""
    if path.startswith("mid_block"):
        return levels - 1
    index = int(re.match(r"(down|up)_blocks\.(\d+)", path).group(2))
    return index if path.startswith("down") else levels - 1 - index


def test_unet_q_len_is_feature_map_area_and_cross_kv_is_text(unet):
    with SeqLenRecorder(unet, model=unet) as rec:
        _unet_step(unet, 10)
        _unet_step(unet, 5)
    rows = rec.rows
    attn_modules = [n for n, m in unet.named_modules() if type(m).__name__ == "Attention"]
    assert len(rows) == 2 * len(attn_modules)  # one row per attention call, two UNet forwards
    assert [r["model_call"] for r in rows] == [0] * len(attn_modules) + [1] * len(attn_modules)
    assert set(ROW_COLUMNS) == set(rows[0])
    heads = unet.config.attention_head_dim  # diffusers' UNet names the head count so
    for r in rows:
        level = _level(r["module_path"], len(BLOCKS))
        side = SAMPLE // 2**level
        assert r["q_len"] == side * side, r
        assert r["kind"] == ("cross" if r["module_path"].endswith("attn2") else "self")
        assert r["kv_len"] == (TEXT_LEN if r["kind"] == "cross" else r["q_len"])
        assert (r["batch"], r["heads"], r["head_dim"]) == (2, heads, BLOCKS[level] // heads)
        assert (r["family"], r["implementation"], r["shape_source"]) == ("diffusers", "AttnProcessor2_0", "sdpa_call")
        assert r["axis"] is None
    assert sorted({r["q_len"] for r in rows}) == [64, 256]  # 4x between levels


def test_unet_eager_processor_recorded_from_module_inputs(unet):
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor())
    try:
        with SeqLenRecorder({"unet": unet}, model=unet) as rec:
            _unet_step(unet)
    finally:
        unet.set_attn_processor(AttnProcessor2_0())
    assert {r["shape_source"] for r in rec.rows} == {"module_inputs"}
    assert {r["implementation"] for r in rec.rows} == {"AttnProcessor"}
    assert all(r["module_path"].startswith("unet.") for r in rec.rows)
    assert sorted({r["q_len"] for r in rec.rows}) == [64, 256]
    assert {r["kv_len"] for r in rec.rows if r["kind"] == "cross"} == {TEXT_LEN}


@pytest.mark.parametrize("processor", ["AttnProcessor", "AttnProcessor2_0"])
def test_diffusers_4d_hidden_states_count_h_times_w(processor):
    from diffusers.models import attention_processor as ap

    attn = ap.Attention(query_dim=32, heads=2, dim_head=16, norm_num_groups=8, residual_connection=True,
                        processor=getattr(ap, processor)())  # a VAE mid-block attention: (B, C, H, W) input
    with torch.no_grad(), SeqLenRecorder(attn) as rec:
        attn(torch.randn(3, 32, 6, 5))
    (row,) = rec.rows
    assert (row["batch"], row["q_len"], row["kv_len"], row["heads"], row["head_dim"]) == (3, 30, 30, 2, 16)
    assert row["module_path"] == "" and row["model_call"] is None


def test_video_unet_marks_temporal_and_spatial_attention():
    from diffusers import UNet3DConditionModel

    unet = UNet3DConditionModel(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
    ).eval()
    frames = 3
    with torch.no_grad(), SeqLenRecorder(unet, model=unet) as rec:
        unet(torch.randn(1, 4, frames, 8, 8), 3, torch.randn(1, TEXT_LEN, 32))
    temporal = [r for r in rec.rows if r["axis"] == "temporal"]
    spatial = [r for r in rec.rows if r["axis"] == "spatial"]
    assert temporal and spatial and len(temporal) + len(spatial) == len(rec.rows)
    assert all("temp" in r["module_path"] or r["module_path"].startswith("transformer_in") for r in temporal)
    assert {(r["q_len"], r["kv_len"]) for r in temporal} == {(frames, frames)}  # attends across frames
    assert {r["q_len"] for r in spatial} == {64, 16}  # attends within a frame: H*W per level
    assert {r["batch"] for r in spatial} == {frames}


def _tiny_llama(attn_implementation: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         attn_implementation=attn_implementation)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_llm_generate_prefill_then_decode_with_growing_kv(attn_implementation):
    from transformers import DynamicCache

    llm = _tiny_llama(attn_implementation)
    prompt, new = 5, 4
    ids = torch.randint(1, 64, (1, prompt))
    signature = inspect.signature(llm.forward)
    with torch.no_grad(), SeqLenRecorder(llm, model=llm) as rec:
        assert inspect.signature(llm.forward) == signature  # generate inspects it to pick its inputs
        out = llm.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0,
                           past_key_values=DynamicCache(config=llm.config))
    assert out.shape[1] == prompt + new
    layers = llm.config.num_hidden_layers
    assert len(rec.rows) == layers * new  # one forward per generated token, one call per layer each
    prefill = [r for r in rec.rows if r["kind"] == "prefill"]
    assert [r["module_path"] for r in prefill] == [f"model.layers.{i}.self_attn" for i in range(layers)]
    assert {(r["model_call"], r["q_len"], r["kv_len"]) for r in prefill} == {(0, prompt, prompt)}
    decode = [r for r in rec.rows if r["kind"] == "decode"]
    assert len(decode) == layers * (new - 1)
    for r in decode:
        assert (r["q_len"], r["kv_len"]) == (1, prompt + r["model_call"])  # the cache grows by one per step
    assert {(r["implementation"], r["family"], r["heads"], r["head_dim"]) for r in rec.rows} == {
        (attn_implementation, "transformers", 4, 8)}
    expected_source = "sdpa_call" if attn_implementation == "sdpa" else "module_inputs"
    assert {r["shape_source"] for r in rec.rows} == {expected_source}


def test_transformers_nested_attention_modules_counted_once():
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64)).eval()
    with torch.no_grad(), SeqLenRecorder(bert) as rec:
        bert(torch.randint(0, 50, (2, 9)))
    assert [r["module_path"] for r in rec.rows] == [f"encoder.layer.{i}.attention.self" for i in range(2)]
    assert {(r["kind"], r["q_len"], r["kv_len"], r["head_dim"]) for r in rec.rows} == {("self", 9, 9, 8)}


def test_multihead_attention_self_cross_and_layouts():
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    seq_first = nn.MultiheadAttention(32, 4).eval()
    x, memory, single = torch.randn(2, 10, 32), torch.randn(2, 6, 32), torch.randn(10, 32)
    with torch.no_grad(), SeqLenRecorder({"a": mha, "b": seq_first}) as rec:
        mha(x, x, x)  # need_weights=True: math path, recorded from the module inputs
        mha(x, memory, memory, need_weights=False)  # calls F.scaled_dot_product_attention inside: still one row
        seq_first(x.transpose(0, 1), memory.transpose(0, 1), memory.transpose(0, 1))
        mha(single, single, single)  # unbatched
    got = [(r["module_path"], r["kind"], r["batch"], r["q_len"], r["kv_len"], r["shape_source"]) for r in rec.rows]
    assert got == [
        ("a", "self", 2, 10, 10, "module_inputs"),
        ("a", "cross", 2, 10, 6, "sdpa_call"),
        ("b", "cross", 2, 10, 6, "module_inputs"),
        ("a", "self", 1, 10, 10, "module_inputs"),
    ]
    assert {(r["heads"], r["head_dim"], r["implementation"]) for r in rec.rows} == {(4, 8, "nn.MultiheadAttention")}


def test_direct_sdpa_call_recorded_and_function_restored():
    original = F.scaled_dot_product_attention
    q, k = torch.randn(2, 4, 1, 8), torch.randn(2, 4, 9, 8)
    with SeqLenRecorder(None) as rec:
        assert F.scaled_dot_product_attention is not original
        out = F.scaled_dot_product_attention(q, k, k)
        F.scaled_dot_product_attention(query=k, key=k, value=k, is_causal=True)
    assert F.scaled_dot_product_attention is original
    torch.testing.assert_close(out, original(q, k, k))
    assert [(r["family"], r["kind"], r["batch"], r["heads"], r["q_len"], r["kv_len"], r["module_path"])
            for r in rec.rows] == [("functional", "decode", 2, 4, 1, 9, None), ("functional", "self", 2, 4, 9, 9, None)]
    with pytest.raises(ZeroDivisionError), SeqLenRecorder(None):
        1 / 0
    assert F.scaled_dot_product_attention is original


class _HandRolledAttention(nn.Module):  # an unknown *Attention class: names the SDPA calls inside
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(16, 48)

    def forward(self, x):
        q, k, v = self.qkv(x).view(x.shape[0], x.shape[1], 3, 2, 8).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([_HandRolledAttention(), _HandRolledAttention()])

    def forward(self, x):
        for layer in self.layers:
            x = x + layer(x).transpose(1, 2).reshape(x.shape)
        return x


def test_compiled_model_recorded_in_an_eager_pass_and_wrappers_removed():
    net = _Net().eval()
    compiled = torch.compile(net, backend="eager")
    x = torch.randn(2, 5, 16)
    before = compiled.__dict__.get("forward")
    with torch.no_grad():
        compiled(x)
        with SeqLenRecorder(compiled, model=compiled) as rec:
            compiled(x)
            rec.next_iteration()
            compiled(x)
    got = [(r["iteration"], r["call_index"], r["model_call"], r["module_path"], r["module_class"], r["q_len"], r["heads"])
           for r in rec.rows]
    assert got == [
        (0, 0, 0, "layers.0", "_HandRolledAttention", 5, 2), (0, 1, 0, "layers.1", "_HandRolledAttention", 5, 2),
        (1, 0, 0, "layers.0", "_HandRolledAttention", 5, 2), (1, 1, 0, "layers.1", "_HandRolledAttention", 5, 2),
    ]
    forwards = {id(m): m.__dict__.get("forward") for m in compiled.modules()}
    assert all("forward" not in m.__dict__ for m in net.modules())  # wrappers removed
    assert forwards[id(compiled)] is before  # the compiled module's own forward is back


def test_a_forward_replaced_meanwhile_is_left_alone_and_reported():
    mha = nn.MultiheadAttention(8, 2)
    replacement = lambda *args, **kwargs: None  # noqa: E731
    with pytest.raises(RuntimeError, match="MultiheadAttention.forward was replaced"):
        with SeqLenRecorder(mha):
            mha.forward = replacement
    assert mha.forward is replacement and F.scaled_dot_product_attention is torch._C._nn.scaled_dot_product_attention


def test_rejects_what_it_cannot_hook():
    with pytest.raises(TypeError, match="model_or_modules"):
        SeqLenRecorder(42)
    with pytest.raises(TypeError, match="model"):
        SeqLenRecorder(None, model="unet")
