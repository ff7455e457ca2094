"""Integrated-gradients throughput of t3vis.explain against Captum's LayerIntegratedGradients.

Both attribute the target logit (the predicted class) to the word-embedding output of the demo
model, from the same baseline (pad ids, special tokens kept), with Gauss-Legendre quadrature at
n_steps=50, and both compute their completeness check: so the two produce the same numbers
(the Pearson correlation of their per-token scores is reported) and the same completeness.

Captum is called two ways, each at a few `internal_batch_size` values (50, 25 or 10 steps per
pass): as a saliency view calls it, one sentence at a time and unpadded, and as a batch job
would, on padded batches of 32 sentences (the attention mask passed along, scores cut back to
each sentence's tokens). The fastest of these on a calibration subset is the baseline.
t3vis batches the (example, step) pairs of many length-sorted sentences, dynamically padded;
it runs twice, in float32 (the like-for-like comparison) and with precision="bfloat16" (autocast;
its completeness error is reported next to it, since it is not the same as float32's).
After a warm-up, the two run `repeats` times, interleaved; a ratio is the median of the
per-round ratios, on wall-clock time (the headline) and on this process's CPU time.

    .venv/bin/python bench/bench_saliency.py [--n 32] [--repeats 3] [--device cpu|cuda|auto]

Environment (used by run_all): T3VIS_BENCH_SALIENCY_N, T3VIS_BENCH_REPEATS, T3VIS_BENCH_DEVICE,
T3VIS_BENCH_SALIENCY_BATCH (t3vis rows per forward pass).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C

TARGET = 2.0
N_STEPS = 50
STEPS_PER_PASS = (50, 25, 10)            # Captum's internal_batch_size, in steps of each sentence
CAPTUM_BATCHES = (1, 32)                 # sentences per attribute() call: 1 unpadded, else padded
CAPTUM_CONFIGS = [(b, s) for b in CAPTUM_BATCHES for s in STEPS_PER_PASS]
MAX_LENGTH = 128


def captum_pass(model, tokenizer, texts, targets, config):
    """Per sentence: (scores (T,), Captum's signed convergence delta). config: (sentences per call, steps per pass)."""
    import torch
    from captum.attr import LayerIntegratedGradients

    device = next(model.parameters()).device
    sentences, steps = config

    def forward(input_ids, attention_mask):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    lig = LayerIntegratedGradients(forward, model.get_input_embeddings())
    out = []
    for start in range(0, len(texts), sentences):
        chunk, goal = texts[start:start + sentences], [int(t) for t in targets[start:start + sentences]]
        enc = tokenizer(chunk, return_tensors="pt", truncation=True, max_length=MAX_LENGTH, padding=True,
                        return_special_tokens_mask=True)
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)             # (B, T)
        base = torch.where(enc["special_tokens_mask"].bool().to(device), ids, tokenizer.pad_token_id)
        attr, delta = lig.attribute(ids, baselines=base, target=goal, additional_forward_args=(mask,),
                                    n_steps=N_STEPS, method="gausslegendre", return_convergence_delta=True,
                                    internal_batch_size=steps * len(chunk))
        scores = attr.sum(-1).detach().float().cpu().numpy()                                  # (B, T)
        lengths = enc["attention_mask"].sum(-1).tolist()
        out += [(scores[b, :n], float(delta[b])) for b, n in enumerate(lengths)]
    return out


def end_point_gaps(model, tokenizer, texts, targets) -> list[float]:
    """f(x) - f(baseline) of the target logit, per sentence (to make Captum's delta relative)."""
    import torch

    device = next(model.parameters()).device
    gaps = []
    with torch.no_grad():
        for text, target in zip(texts, targets):
            enc = tokenizer([text], return_tensors="pt", truncation=True, max_length=MAX_LENGTH,
                            return_special_tokens_mask=True)
            ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
            base = torch.where(enc["special_tokens_mask"].bool().to(device), ids, tokenizer.pad_token_id)
            f = model(input_ids=torch.cat([ids, base]), attention_mask=torch.cat([mask, mask])).logits[:, target]
            gaps.append(float(f[0] - f[1]))
    return gaps


def parse_args(argv):
    p = C.timing_parser(__doc__, "T3VIS_BENCH_SALIENCY_N", 32)
    p.add_argument("--batch-size", type=int, default=C.env_int("T3VIS_BENCH_SALIENCY_BATCH", 0),
                   help="t3vis rows ((sentence, step) pairs) per forward pass; 0: explain's default for the device")
    p.add_argument("--calibrate-n", type=int, default=C.env_int("T3VIS_BENCH_SALIENCY_CALIBRATE_N", 8),
                   help="sentences each Captum configuration is timed on before the run")
    return p.parse_args(argv)


def describe(config) -> str:
    sentences, steps = config
    return (f"{'1 sentence' if sentences == 1 else f'padded batches of {sentences}'} per call, "
            f"internal_batch_size {steps} steps")


def calibrate(model, tokenizer, texts, targets, device) -> tuple[tuple[int, int], dict[str, float]]:
    """The fastest Captum configuration on the calibration sentences (each the best of two, after a warm-up)."""
    captum_pass(model, tokenizer, texts[:2], targets[:2], (2, N_STEPS))
    seconds = {}
    for config in CAPTUM_CONFIGS:
        one_pass = functools.partial(captum_pass, model, tokenizer, texts, targets, config)  # binds this config
        seconds[config] = min(C.timed(one_pass, device)[0] for _ in range(2))
        print(f"[saliency] captum {describe(config)}: {seconds[config]:.2f}s on {len(texts)} sentences", flush=True)
    best = min(seconds, key=seconds.get)
    return best, {describe(c): t for c, t in seconds.items()}


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args([] if argv is None else argv)
    import numpy as np
    import torch

    import t3vis

    device = C.resolve_device(args.device)
    torch.manual_seed(0)                                    # the demo head is freshly initialised
    model, tokenizer = C.load_model(device)
    model.eval()
    texts, _ = C.demo_texts(args.n)
    targets = [a.target for a in t3vis.explain(model, tokenizer, texts, "gradient")]
    batch = {"batch_size": args.batch_size} if args.batch_size else {}
    print(f"[saliency] {len(texts)} sentences, n_steps {N_STEPS}, t3vis batch {args.batch_size or 'default'}, "
          f"device {device}, {torch.get_num_threads()} threads, {args.repeats} repeats", flush=True)
    best, calibration = calibrate(model, tokenizer, texts[:args.calibrate_n], targets[:args.calibrate_n], device)

    outputs = {}
    def ours(precision):
        return lambda: outputs.__setitem__(precision, t3vis.explain(
            model, tokenizer, texts, "integrated_gradients", targets, n_steps=N_STEPS,
            max_length=MAX_LENGTH, precision=precision, **batch))

    runs = {"float32": ours("float32"), "bfloat16": ours("bfloat16"),
            "captum": lambda: outputs.__setitem__("captum", captum_pass(model, tokenizer, texts, targets, best))}
    C.timed(lambda: t3vis.explain(model, tokenizer, texts[:4], "integrated_gradients", n_steps=N_STEPS), device)
    wall = {k: [] for k in runs}
    cpu = {k: [] for k in runs}
    load_before = C.loadavg()
    for r in range(args.repeats):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            w, c = C.timed(runs[name], device)
            wall[name].append(w)
            cpu[name].append(c)
        print(f"[saliency] round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in wall.items()), flush=True)
    return _rows(texts, outputs, wall, cpu, end_point_gaps(model, tokenizer, texts, targets), best,
                 {"n": len(texts), "n_steps": N_STEPS, "batch_size": args.batch_size or "default", "device": device,
                  "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
                  "threads": torch.get_num_threads(), "repeats": args.repeats, "captum_calibration_s": calibration,
                  "loadavg_before": load_before, "loadavg_after": C.loadavg()}, np)


def _rows(texts, outputs, wall, cpu, gaps, best, settings, np) -> list[dict]:
    n = len(texts)
    captum_delta = [abs(d) / max(abs(g), 1e-12) for (_, d), g in zip(outputs["captum"], gaps)]
    rows = [C.result("saliency", f"captum LIG ({describe(best)}), {n} sentences",
                     n / C.median(wall["captum"]), "sent/s",
                     detail={**settings, "runs_wall": wall["captum"], "runs_cpu": cpu["captum"]}),
            C.result("saliency", "captum median completeness error", C.median(captum_delta), "rel",
                     detail={"max": max(captum_delta)})]
    for precision in ("float32", "bfloat16"):
        ours = outputs[precision]
        deltas = [a.delta for a in ours]
        pearson = [float(np.corrcoef(a.scores, s)[0, 1]) for a, (s, _) in zip(ours, outputs["captum"])]
        rows += [C.result("saliency", f"t3vis IG {precision}, {n} sentences", n / C.median(wall[precision]),
                          "sent/s", detail={"runs_wall": wall[precision], "runs_cpu": cpu[precision]})]
        for clock, times in (("wall", wall), ("cpu", cpu)):
            paired = [c / t for t, c in zip(times[precision], times["captum"])]
            rows.append(C.result("saliency", f"IG throughput t3vis {precision} / captum float32 ({clock})",
                                 C.median(paired), "x", target=TARGET, op=">=", detail={"per_round": paired}))
        rows += [C.result("saliency", f"t3vis {precision} median completeness error", C.median(deltas), "rel",
                          detail={"max": max(deltas)}),
                 C.result("saliency", f"min per-sentence Pearson t3vis {precision} vs captum", min(pearson), "r",
                          target=0.99, op=">=", detail={"median": C.median(pearson)})]
        print(f"[saliency] t3vis {precision} / captum throughput: {rows[-4]['value']:.2f}x wall, "
              f"{rows[-3]['value']:.2f}x cpu; completeness {C.median(deltas):.2e} "
              f"(captum {C.median(captum_delta):.2e})", flush=True)
    return rows


if __name__ == "__main__":
    C.standalone(lambda: main(sys.argv[1:]))
