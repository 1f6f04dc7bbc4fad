"""dynamar: prompt-based fine-tuning with a mask-token representation (studies.md section 6).

One iteration is one AdamW step of fine-tuning a randomly initialised BERT masked LM
(BertForMaskedLM) with a linear task head on a synthetic batch: `--batch` texts of `seq_len`
random word ids and random labels, the same batch every iteration.

Baseline `cls-head` (standard fine-tuning): [CLS] text [SEP]; the hidden state at [CLS]
feeds the task head. Variant `mask-prompt` (DynaMaR): each text gets a prompt template with
a [MASK] token appended, [CLS] text template [SEP], and the hidden state at [MASK] (not the
vocabulary logits) feeds the task head; each row's template is drawn from a pool of
`templates` templates (seeded: every iteration, every repeat, the same draw). Rows are padded
to the longest one in the batch.

Parts: forward (encoder, head and loss), backward, optimizer (AdamW step and zero_grad).
Dropout is on, as in fine-tuning; `reset` restores weights, optimizer state and the RNG.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from workloads.base import Built, Params, RunSpec, Workload, register
from workloads.common import TrainingState, param_stats, seed_everything, synchronize, training_info


@dataclass(frozen=True)
class BertDims:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int


@dataclass(frozen=True)
class FineTuneParams(Params):
    seq_len: int  # text tokens per row, before [CLS], [SEP] and a template
    templates: int  # size of the template pool (mask-prompt)
    classes: int  # the task's labels

    def check(self) -> None:
        if self.seq_len < 1:
            raise ValueError(f"--param seq_len must be at least 1, got {self.seq_len}")
        if not 1 <= self.templates <= len(TEMPLATES):
            raise ValueError(f"--param templates must be between 1 and {len(TEMPLATES)} (the templates written here), got {self.templates}")
        if self.classes < 2:
            raise ValueError(f"--param classes must be at least 2, got {self.classes}")


DIMS = {
    "tiny": BertDims(hidden=64, layers=2, heads=2, intermediate=128, vocab=1000, max_positions=128),
    # BERT-base
    "paper": BertDims(hidden=768, layers=12, heads=12, intermediate=3072, vocab=30522, max_positions=512),
}
PARAMS = {"tiny": FineTuneParams(seq_len=32, templates=4, classes=2),
          "paper": FineTuneParams(seq_len=128, templates=8, classes=2)}

# the pool: e-commerce-flavoured prompts, each with one [MASK] (DynaMaR draws from a diverse pool)
TEMPLATES = (
    "it was [MASK] .",
    "the product is [MASK] .",
    "all in all , this item is [MASK] .",
    "question : is this review positive ? answer : [MASK] .",
    "in summary , the customer found it [MASK] .",
    "overall the quality was [MASK] .",
    "my opinion of this purchase : [MASK] .",
    "the review says the product is [MASK] .",
)
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
FILLER = "good bad great terrible cheap fast slow broken works love hate size color price shipping box return".split()


def tokenizer():
    """A WordPiece tokenizer over the templates' words and some filler words, built in memory."""
    from transformers import BertTokenizer

    words = sorted({w for t in TEMPLATES for w in t.split() if w != "[MASK]"} | set(FILLER))
    return BertTokenizer(vocab={token: i for i, token in enumerate((*SPECIALS, *words))})


class TaskModel(torch.nn.Module):
    """A masked LM's encoder with a linear task head reading one position per row."""

    def __init__(self, mlm: torch.nn.Module, classes: int):
        super().__init__()
        self.mlm = mlm
        self.head = torch.nn.Linear(mlm.config.hidden_size, classes)
        # the vocabulary head is not used: its own weights are frozen (its decoder is the word
        # embedding matrix, which trains with the encoder)
        mlm.cls.predictions.transform.requires_grad_(False)
        mlm.cls.predictions.bias.requires_grad_(False)

    def forward(self, input_ids, attention_mask, positions):
        hidden = self.mlm.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(hidden[torch.arange(len(positions), device=positions.device), positions])


@dataclass(frozen=True)
class Batch:
    """Rows of token ids (unpadded), their labels, and the token whose hidden state is read."""

    rows: tuple[tuple[int, ...], ...]
    labels: tuple[int, ...]
    read_token: str  # "[CLS]" or "[MASK]"

    def tensors(self, vocab: dict[str, int], device) -> dict[str, torch.Tensor]:
        """Padded input_ids and attention_mask, the read position of each row, and the labels."""
        longest = max(map(len, self.rows))
        ids = torch.full((len(self.rows), longest), vocab["[PAD]"], dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(self.rows):
            ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
        positions = torch.tensor([row.index(vocab[self.read_token]) for row in self.rows])
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "positions": positions.to(device),
                "labels": torch.tensor(self.labels).to(device)}


def cls_batch(spec: RunSpec, vocab: dict[str, int]) -> Batch:
    """The baseline: [CLS] text [SEP], read at [CLS]; text words and labels drawn with the run's seed."""
    generator = torch.Generator().manual_seed(spec.seed)
    words = torch.arange(len(SPECIALS), len(vocab))
    text = words[torch.randint(0, len(words), (spec.batch, spec.params.seq_len), generator=generator)]
    labels = torch.randint(0, spec.params.classes, (spec.batch,), generator=generator)
    rows = tuple((vocab["[CLS]"], *row, vocab["[SEP]"]) for row in text.tolist())
    return Batch(rows=rows, labels=tuple(labels.tolist()), read_token="[CLS]")


# --- variants: each applies one technique --------------------------------------------------

def mask_prompt(batch: Batch, spec: RunSpec, tok) -> Batch:
    """DynaMaR: a template with [MASK] appended to each text, drawn from the pool; read at [MASK]."""
    pool = [tok(t, add_special_tokens=False)["input_ids"] for t in TEMPLATES[:spec.params.templates]]
    draws = torch.randint(0, len(pool), (len(batch.rows),), generator=torch.Generator().manual_seed(spec.seed + 1))
    rows = tuple((*row[:-1], *pool[d], row[-1]) for row, d in zip(batch.rows, draws.tolist()))
    return replace(batch, rows=rows, read_token="[MASK]")


VARIANTS = {"cls-head": (), "mask-prompt": (mask_prompt,)}


def build(spec: RunSpec) -> Built:
    from transformers import BertConfig, BertForMaskedLM

    dims, params = DIMS[spec.preset], spec.params
    tok = tokenizer()
    vocab = tok.get_vocab()
    batch = cls_batch(spec, vocab)
    for technique in VARIANTS[spec.variant]:
        batch = technique(batch, spec, tok)
    longest = max(map(len, batch.rows))
    if longest > dims.max_positions:
        raise ValueError(f"--param seq_len={params.seq_len}: rows of {longest} tokens exceed the {spec.preset} preset's "
                         f"{dims.max_positions} positions")
    seed_everything(spec.seed)
    config = BertConfig(vocab_size=dims.vocab, hidden_size=dims.hidden, num_hidden_layers=dims.layers, num_attention_heads=dims.heads,
                        intermediate_size=dims.intermediate, max_position_embeddings=dims.max_positions, pad_token_id=vocab["[PAD]"])
    model = TaskModel(BertForMaskedLM(config), params.classes).to(spec.torch_device, spec.torch_dtype).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-5)
    inputs = batch.tensors(vocab, spec.torch_device)
    labels = inputs.pop("labels")
    state = TrainingState(model, optimizer)

    def reset():
        state.restore()
        torch.manual_seed(spec.seed)  # dropout draws the same masks every repeat

    info = {**param_stats(model), "layers": dims.layers, "hidden": dims.hidden, "heads": dims.heads,
            "text_len": params.seq_len, "row_len_max": longest, "row_token_count": sum(map(len, batch.rows)),
            "padded_token_count": longest * len(batch.rows), "read_token": batch.read_token}

    def iteration(part):
        with part("forward"):
            loss = F.cross_entropy(model(**inputs), labels)
        with part("backward"):
            loss.backward()
        with part("optimizer"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        synchronize(spec.torch_device)
        info.update(training_info(model, optimizer))
        return loss.detach()

    return Built(
        iteration=iteration,
        items=spec.batch,
        item_unit="samples",
        model=model,  # one forward per optimizer step
        part_items={"forward": spec.batch, "backward": spec.batch, "optimizer": spec.batch},
        reset=reset,
        info=info,
    )


WORKLOAD = register(Workload(
    name="dynamar",
    study="6",
    description="BERT masked-LM fine-tuning step (forward, backward, AdamW): [CLS] task head vs a [MASK] prompt template "
                "drawn from a pool, the hidden state at [MASK] feeding the head",
    kind="training",
    presets=PARAMS,
    variants=tuple(VARIANTS),
    build=build,
))
