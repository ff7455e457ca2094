"""Shared fixtures: tiny randomly initialised models of every supported family, built here.

No weights are downloaded: configs are made in code and tokenizers from a word list.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

WORDS = ("the a movie film was is great bad boring fun plot actor script good awful love hate "
         "scene story funny dull best worst really not very quite so and but").split()


def make_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) for _ in range(n)]


def make_labels(n: int, num_labels: int = 2, seed: int = 0) -> list[int]:
    rng = random.Random(seed + 1)
    return [rng.randrange(num_labels) for _ in range(n)]


def make_tokenizer(kind: str = "bert"):
    """A word-level fast tokenizer with the special tokens each family expects."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if kind == "gpt2":
        specials = ["<|endoftext|>"]
    elif kind == "roberta":
        specials = ["<s>", "<pad>", "</s>", "<unk>"]
    else:
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {tok: i for i, tok in enumerate(specials + list(WORDS))}
    unk = "[UNK]" if "[UNK]" in vocab else ("<unk>" if "<unk>" in vocab else specials[0])
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if kind == "roberta":
        tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>",
                                                           special_tokens=[("<s>", 0), ("</s>", 2)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", cls_token="<s>",
                                       sep_token="</s>", pad_token="<pad>", unk_token="<unk>")
    if kind == "gpt2":
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                       unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, cls_token="[CLS]", sep_token="[SEP]",
                                   pad_token="[PAD]", unk_token="[UNK]")


ARCHITECTURES = ("bert", "roberta", "distilbert", "electra", "gpt2")


def make_model(kind: str = "bert", num_labels: int = 2, seed: int = 0):
    """(model, tokenizer): a 2-layer, 4-head, 32-dim random classifier of the given family.

    "albert" has 3 layers that all run one shared block (one hidden group, one layer in it).
    """
    import torch
    from transformers import (
        AlbertConfig,
        AutoModelForSequenceClassification,
        BertConfig,
        DistilBertConfig,
        ElectraConfig,
        GPT2Config,
        RobertaConfig,
    )

    tokenizer = make_tokenizer("gpt2" if kind == "gpt2" else "roberta" if kind == "roberta" else "bert")
    vocab = len(tokenizer)
    common = dict(vocab_size=vocab, num_labels=num_labels)
    if kind == "albert":
        config = AlbertConfig(embedding_size=16, hidden_size=32, num_hidden_layers=3, num_hidden_groups=1,
                              inner_group_num=1, num_attention_heads=4, intermediate_size=37,
                              max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id, **common)
    elif kind == "bert":
        config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                            max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id, **common)
    elif kind == "roberta":
        config = RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                               max_position_embeddings=70, pad_token_id=tokenizer.pad_token_id,
                               bos_token_id=0, eos_token_id=2, **common)
    elif kind == "distilbert":
        config = DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64,
                                  pad_token_id=tokenizer.pad_token_id, **common)
    elif kind == "electra":
        config = ElectraConfig(embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=37, max_position_embeddings=64,
                               pad_token_id=tokenizer.pad_token_id, **common)
    elif kind == "gpt2":
        config = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, pad_token_id=tokenizer.pad_token_id,
                            bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, **common)
    else:
        raise ValueError(kind)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    return model, tokenizer


@pytest.fixture
def tiny_bert():
    return make_model("bert")


@pytest.fixture
def tiny_run(tmp_path):
    """A recorded tiny BERT run with two checkpoints and training dynamics: (run_dir, texts, labels)."""
    import torch

    from t3vis import Recorder

    model, tokenizer = make_model("bert")
    texts, labels = make_texts(24), make_labels(24)
    rec = Recorder(tmp_path / "run", model, tokenizer, texts, labels, splits=["train"] * 12 + ["validation"] * 12,
                   batch_size=8)
    rec.snapshot(step=0, epoch=0.0)
    for _epoch in range(2):
        enc = tokenizer(texts[:12], padding=True, return_tensors="pt")
        logits = model(**enc).logits
        rec.observe(torch.arange(12), logits, torch.tensor(labels[:12]))
    rec.snapshot(step=5, epoch=2.0)
    return tmp_path / "run", texts, labels


def gate_gradients_by_finite_differences(model, tokenizer, texts, labels, h: float = 1e-6):
    """(n, L, H) d loss_n / d gate[l, h] by central differences over every head's gate: a reference
    for the gate-gradient code that shares nothing with it but the gates themselves (use float64)."""
    import numpy as np
    import torch

    from t3vis.models.gates import gated_heads
    from t3vis.models.structure import find_attention_layout

    layout = find_attention_layout(model)
    enc = tokenizer(texts, padding=True, return_tensors="pt")

    def losses(gates):
        with torch.no_grad(), gated_heads(layout, gates):
            logits = model(**enc).logits
        return torch.nn.functional.cross_entropy(logits, torch.tensor(labels), reduction="none")   # (n,)

    L, H = layout.num_layers, layout.num_heads
    expected = np.zeros((len(texts), L, H), dtype=np.float64)
    for layer in range(L):
        for head in range(H):
            up = torch.ones(L, H, dtype=torch.float64)
            down = up.clone()
            up[layer, head], down[layer, head] = 1 + h, 1 - h
            expected[:, layer, head] = ((losses(up) - losses(down)) / (2 * h)).numpy()
    return expected


GENERATIVE = ("gpt2", "llama", "t5", "bart")


def make_seq2seq_tokenizer():
    """A word-level tokenizer for encoder-decoders: <pad> 0, </s> 1, <unk> 2, <s> 3; "</s>" closes every text."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>", "<s>"]
    vocab = {tok: i for i, tok in enumerate(specials + list(WORDS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>")


def make_llama_tokenizer():
    """Llama-style: "<s>" opens every text, no pad token (the task reuses "</s>")."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    vocab = {tok: i for i, tok in enumerate(specials + list(WORDS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def make_generative_model(kind: str = "gpt2", seed: int = 0, lora: bool = False):
    """(model, tokenizer): a tiny random language model; kinds in GENERATIVE.

    gpt2 and llama are decoder-only (llama: RMSNorm, rotary, 4 query heads sharing 2 key/value
    heads); t5 and bart are encoder-decoders with 2 encoder and 3 decoder layers. lora=True wraps
    the model with PEFT LoRA adapters on its attention projections.
    """
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        BartConfig,
        GPT2Config,
        LlamaConfig,
        T5Config,
    )

    if kind == "gpt2":
        tokenizer = make_tokenizer("gpt2")
        config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=64,
                            bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    elif kind == "llama":
        tokenizer = make_llama_tokenizer()
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                             bos_token_id=1, eos_token_id=2, pad_token_id=None)
    elif kind == "t5":
        tokenizer = make_seq2seq_tokenizer()
        config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3,
                          num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    elif kind == "bart":
        tokenizer = make_seq2seq_tokenizer()
        config = BartConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=2, decoder_layers=3,
                            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=48,
                            decoder_ffn_dim=48, max_position_embeddings=64, pad_token_id=0, eos_token_id=1,
                            bos_token_id=3, decoder_start_token_id=1, forced_eos_token_id=None)
    else:
        raise ValueError(kind)
    torch.manual_seed(seed)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = auto.from_config(config, attn_implementation="eager")
    if lora:
        from peft import LoraConfig, get_peft_model

        targets = {"gpt2": ["c_attn"], "llama": ["q_proj", "v_proj"], "t5": ["q", "v"], "bart": ["q_proj", "v_proj"]}
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets[kind], lora_dropout=0.0))
    return model, tokenizer


def make_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(sources, targets): word sequences and a shorter rewrite of each (a tiny summarisation task)."""
    texts = make_texts(n, seed)
    return texts, [" ".join(t.split()[: max(1, len(t.split()) // 2)]) for t in texts]


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium under Playwright's sync API, one per test session: the browser and the
    notebook tests share it (the sync API allows one running Playwright per thread)."""
    from browser.conftest import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium is missing at {CHROMIUM}; the browser tests need it. Install it with "
                    "`apt-get update && apt-get install -y chromium` (Debian), or point T3VIS_CHROMIUM at a "
                    "Chromium binary.", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()
