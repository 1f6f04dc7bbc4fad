"""dynamar: the [MASK] prompt rows (one [MASK], a template of the pool, the same draw per seed),
the position the head reads, the sequence-length inflation the recorder sees, and BERT-base's
dimensions. (The contract every workload keeps, drift-free repeats included, is in test_contract.py.)"""
from __future__ import annotations

import pytest
import torch

from profilers.parts import Parts, untimed_part
from profilers.seqlen import SeqLenRecorder
from workloads import dynamar
from workloads.base import RunOptions, get

TOK = dynamar.tokenizer()
VOCAB = TOK.get_vocab()
_BUILT: dict[tuple, object] = {}


def batch(variant: str, seed: int = 0, batch_size: int = 8, **params):
    spec = get("dynamar").resolve(RunOptions(variant=variant, batch=batch_size, seed=seed, params=params))
    rows = dynamar.cls_batch(spec, VOCAB)
    for technique in dynamar.VARIANTS[variant]:
        rows = technique(rows, spec, TOK)
    return spec, rows


def built(variant: str):
    if variant not in _BUILT:
        workload = get("dynamar")
        _BUILT[variant] = workload.build(workload.resolve(RunOptions(variant=variant, batch=4)))
    return _BUILT[variant]


def test_templates_survive_the_wordpiece_vocabulary_with_one_mask():
    for template in dynamar.TEMPLATES:
        ids = TOK(template, add_special_tokens=False)["input_ids"]
        assert ids.count(VOCAB["[MASK]"]) == 1 and VOCAB["[UNK]"] not in ids, template


def test_mask_prompt_appends_a_pool_template_before_sep():
    spec, cls = batch("cls-head")
    _, prompt = batch("mask-prompt")
    p = spec.params
    pool = {tuple(TOK(t, add_special_tokens=False)["input_ids"]) for t in dynamar.TEMPLATES[:p.templates]}
    assert cls.read_token == "[CLS]" and prompt.read_token == "[MASK]" and prompt.labels == cls.labels
    for plain, row in zip(cls.rows, prompt.rows):
        assert len(plain) == p.seq_len + 2 and row[:-1][:len(plain) - 1] == plain[:-1] and row[-1] == VOCAB["[SEP]"]
        assert tuple(row[len(plain) - 1:-1]) in pool
    tensors = prompt.tensors(VOCAB, "cpu")
    read = tensors["input_ids"][torch.arange(8), tensors["positions"]]
    assert (read == VOCAB["[MASK]"]).all() and (cls.tensors(VOCAB, "cpu")["positions"] == 0).all()
    assert tensors["attention_mask"].sum(1).tolist() == [len(r) for r in prompt.rows]


def test_template_draws_repeat_per_seed_and_follow_the_pool_size():
    assert batch("mask-prompt")[1] == batch("mask-prompt")[1]
    assert batch("mask-prompt")[1].rows != batch("mask-prompt", seed=1)[1].rows
    _, one = batch("mask-prompt", batch_size=16, templates=1)
    assert len({len(r) for r in one.rows}) == 1, "a pool of one template: every row alike"
    _, many = batch("mask-prompt", batch_size=16, templates=8)
    assert len({r[-8:] for r in many.rows}) > 1
    with pytest.raises(ValueError, match="--param templates must be between 1 and 8"):
        get("dynamar").resolve(RunOptions(params={"templates": 9}))


def test_step_parts_and_the_head_reads_the_mask_position():
    b = built("mask-prompt")
    parts = Parts(lambda: 0)
    b.reset()
    parts.start()
    b.iteration(parts)
    parts.stop()
    assert set(parts.totals_ns) == {"forward", "backward", "optimizer", "unmarked"}
    head = b.model.head
    assert head.weight.grad is None, "the optimizer part zeroes the gradients"
    assert b.info["optimizer_state_bytes"] >= 2 * b.info["trainable_param_bytes"]  # AdamW's two moments


def test_prompt_inflates_the_attention_sequence_length():
    lengths = {}
    for variant in ("cls-head", "mask-prompt"):
        b = built(variant)
        with SeqLenRecorder(b.model, model=b.model) as recorder:
            b.reset()
            b.iteration(untimed_part)
        assert {r["kind"] for r in recorder.rows} == {"self"} and len(recorder.rows) == dynamar.DIMS["tiny"].layers
        lengths[variant] = recorder.rows[0]["q_len"]
    assert lengths["cls-head"] == dynamar.PARAMS["tiny"].seq_len + 2
    assert lengths["mask-prompt"] > lengths["cls-head"] + 3  # the shortest template is 4 tokens


def test_paper_preset_is_bert_base():
    from transformers import BertConfig, BertForMaskedLM

    d = dynamar.DIMS["paper"]
    config = BertConfig(vocab_size=d.vocab, hidden_size=d.hidden, num_hidden_layers=d.layers, num_attention_heads=d.heads,
                        intermediate_size=d.intermediate, max_position_embeddings=d.max_positions)
    with torch.device("meta"):
        model = BertForMaskedLM(config)
    assert 108e6 < sum(p.numel() for p in model.bert.parameters()) < 111e6  # BERT-base encoder: 109.5M (no pooler)
