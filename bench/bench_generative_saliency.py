"""Integrated gradients for a language model: t3vis.explain(task="causal-lm") against Captum's
LLMGradientAttribution over LayerIntegratedGradients, on the same target tokens.

The model is GPT-2 shaped and randomly initialised (4 layers, 256 dimensions, 4 heads) over the
demo model's tokenizer; the texts are demo sentences, each cut into a prompt (its first half)
and a completion (the rest). Both attribute the log-probability of every completion token,
teacher forced, at the word-embedding output with Gauss-Legendre quadrature at n_steps=50, pad
baseline, special tokens kept. Captum is called as its tutorial does: one sentence at a time,
TextTokenInput(prompt) and the completion's token ids as the target; internally it runs one
LayerIntegratedGradients per target token over the prompt plus the earlier target tokens.
t3vis batches the (target token, step) pairs of all sentences, length-sorted, and projects
to the vocabulary only at each row's predicting position. (Captum holds the earlier completion
tokens fixed while t3vis also attributes to them, so only the first target token's row is the
same computation: its Pearson correlation is reported as a check.) After a warm-up the two run
`repeats` times, interleaved; a ratio is the median of the per-round ratios, on wall-clock time
and on this process's CPU time (steadier on a shared machine).

    .venv/bin/python bench/bench_generative_saliency.py [--n 3] [--repeats 3] [--device cpu|cuda|auto]

Environment (used by run_all): T3VIS_BENCH_GENERATIVE_SALIENCY_N, T3VIS_BENCH_REPEATS, T3VIS_BENCH_DEVICE.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C

N_STEPS = 50
MAX_WORDS = 10                  # words per sentence kept: the bench stays under a minute on 2 cores
TARGETS = {"cpu": 1.0, "cuda": 2.0}


def split(texts: list[str]) -> tuple[list[str], list[str]]:
    words = [t.split()[:MAX_WORDS] for t in texts]
    return [" ".join(w[:len(w) // 2]) for w in words], [" ".join(w[len(w) // 2:]) for w in words]


def captum_pass(model, tokenizer, prompts, target_ids):
    """Per sentence Captum's token_attr, (n_target, n_prompt_tokens without specials)."""
    import torch
    from captum.attr import LayerIntegratedGradients, LLMGradientAttribution, TextTokenInput

    llm = LLMGradientAttribution(LayerIntegratedGradients(model, model.get_input_embeddings()), tokenizer)
    out = []
    for prompt, targets in zip(prompts, target_ids):
        inp = TextTokenInput(prompt, tokenizer, baselines=tokenizer.pad_token_id,
                             skip_tokens=list(tokenizer.all_special_ids))
        result = llm.attribute(inp, target=torch.as_tensor(targets), n_steps=N_STEPS, method="gausslegendre")
        out.append(result.token_attr.detach().float().cpu().numpy())
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    p = C.timing_parser(__doc__, "T3VIS_BENCH_GENERATIVE_SALIENCY_N", 3)
    args = p.parse_args([] if argv is None else argv)
    import numpy as np
    import torch

    import t3vis

    device = C.resolve_device(args.device)
    model, tokenizer = C.generative_model(device)
    prompts, completions = split(C.demo_texts(args.n)[0])
    outputs: dict = {}

    def ours():
        outputs["t3vis"] = t3vis.explain(model, tokenizer, prompts, "integrated_gradients", task="causal-lm",
                                         targets=completions, n_steps=N_STEPS)

    ours()
    target_ids = [a.target_ids for a in outputs["t3vis"]]
    runs = {"t3vis": ours, "captum": lambda: outputs.__setitem__("captum",
                                                                 captum_pass(model, tokenizer, prompts, target_ids))}
    n_tokens = sum(len(t) for t in target_ids)
    print(f"[generative_saliency] {len(prompts)} sentences, {n_tokens} target tokens, n_steps {N_STEPS}, "
          f"device {device}, {torch.get_num_threads()} threads, {args.repeats} repeats", flush=True)
    runs["captum"]()                                                                   # warm-up
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.repeats):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            w, c = C.timed(runs[name], device)
            wall[name].append(w)
            cpu[name].append(c)
        print(f"[generative_saliency] round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in wall.items()),
              flush=True)
    pearson = []
    for a, ref in zip(outputs["t3vis"], outputs["captum"]):
        n_prompt = a.predicted_at[0] + 1                   # the first target token's row: the same computation
        kept = ~np.isin(tokenizer.convert_tokens_to_ids(a.input_tokens[:n_prompt]), tokenizer.all_special_ids)
        pearson.append(float(np.corrcoef(a.scores[0, :n_prompt][kept], ref[0])[0, 1]))
    deltas = np.concatenate([a.delta_relative for a in outputs["t3vis"]])
    target = TARGETS["cuda" if device.startswith("cuda") else "cpu"]
    rows = []
    for clock, times in (("wall", wall), ("cpu", cpu)):
        paired = [c / t for t, c in zip(times["t3vis"], times["captum"])]
        rows.append(C.result("generative_saliency", f"IG throughput t3vis / captum LLMGradientAttribution ({clock}, "
                             f"{n_tokens} target tokens)", C.median(paired), "x", target=target, op=">=",
                             detail={"per_round": paired, "t3vis_s": times["t3vis"], "captum_s": times["captum"],
                                     "n": len(prompts), "n_steps": N_STEPS, "device": device,
                                     "threads": torch.get_num_threads(), "loadavg": C.loadavg()}))
    rows += [C.result("generative_saliency", "t3vis median completeness error", float(np.nanmedian(deltas)), "rel",
                     detail={"max": float(np.nanmax(deltas))}),
            C.result("generative_saliency", "min first-row Pearson t3vis vs captum", min(pearson), "r",
                     target=0.99, op=">=")]
    print(f"[generative_saliency] t3vis / captum: {rows[0]['value']:.2f}x wall, {rows[1]['value']:.2f}x cpu",
          flush=True)
    return rows


if __name__ == "__main__":
    C.standalone(lambda: main(sys.argv[1:]))
