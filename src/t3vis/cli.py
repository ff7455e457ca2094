"""The `t3vis` command: a thin shell over record, store and serve."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from t3vis.errors import InvalidInputError, NotFoundError, T3VisError
from t3vis.tasks import TASKS


def _demo(args) -> int:
    if args.task == "seq2seq":
        from t3vis.demo_generative import HeadlineDemoConfig, run_headline_demo

        run_dir = run_headline_demo(_demo_config(HeadlineDemoConfig(), args))
    else:
        from t3vis.demo import DemoConfig, run_demo

        run_dir = run_demo(_demo_config(DemoConfig(), args))
    print(f"run written to {run_dir.resolve()}")
    if args.no_serve:
        print(f"view it with `t3vis serve {run_dir}`")
        return 0
    return _serve_runs([run_dir], args)


_DEMO_SIZES = ("train_size", "heldout_size", "probe_train_size", "epochs", "snapshots_per_epoch", "batch_size",
               "max_length", "seed")


def _demo_config(defaults, args):
    """The demo's config: its task's defaults, overridden by the flags given."""
    from dataclasses import replace

    given = {name: getattr(args, name) for name in _DEMO_SIZES if getattr(args, name) is not None}
    if args.out is not None:
        given["out"] = Path(args.out)
    config = replace(defaults, **given)
    return replace(config, probe_train_size=min(config.probe_train_size, config.train_size))


def _demo_default(name: str) -> str:
    """'default X; Y with --task seq2seq' for a demo flag, from the two demos' configs."""
    from t3vis.demo import DemoConfig
    from t3vis.demo_generative import HeadlineDemoConfig

    classification, seq2seq = getattr(DemoConfig(), name), getattr(HeadlineDemoConfig(), name)
    return f"default {classification}" if classification == seq2seq else \
        f"default {classification}; {seq2seq} with --task seq2seq"


def _serve_runs(runs, args) -> int:
    from t3vis.server import serve

    with contextlib.suppress(KeyboardInterrupt):
        serve(runs, host=args.host, port=args.port, token=args.token, model_cache=args.model_cache,
              open_browser=not args.no_browser, cors_origins=args.cors_origin or ())
    return 0


def _serve(args) -> int:
    return _serve_runs([Path(r) for r in args.runs], args)


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    from t3vis.server.launch import DEFAULT_HOST, DEFAULT_PORT

    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to bind (default {DEFAULT_HOST}); any other needs a token")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)")
    parser.add_argument("--token", default=None,
                        help="API token; beyond localhost one is generated and printed in the URL if not given")
    parser.add_argument("--model-cache", type=int, default=2, metavar="N",
                        help="checkpoints kept loaded for the instance view and pruning (default 2)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="allow browser calls from this origin (repeatable; none by default)")


def _record(args) -> int:
    from t3vis.record.offline import record_checkpoints
    from t3vis.store.schema import RUN_META

    out = Path(args.out)
    if not args.append and (out / RUN_META).exists():   # before the Recorder, whose message names exist_ok
        raise InvalidInputError(f"{out} already holds a run; choose a new --out folder, or pass --append to add "
                                "these checkpoints to it")
    summaries = record_checkpoints([Path(c) for c in args.checkpoints], Path(args.data), out,
                                   text_column=args.text_column, label_column=args.label_column,
                                   id_column=args.id_column, split_column=args.split_column,
                                   label_map=_label_map(args.label_map), task=args.task,
                                   target_column=args.target_column, batch_size=args.batch_size,
                                   max_length=args.max_length, pooling=args.pooling, exist_ok=args.append)
    for s in summaries:
        shown = [f"{name.removeprefix('probe_').replace('_', ' ')} {s.metrics[name]:.3f}"
                 for name in ("probe_accuracy", "probe_loss", "probe_perplexity", "probe_token_accuracy")
                 if s.metrics.get(name) is not None]
        print(f"step {s.step}: probe " + ", ".join(shown))
    print(f"run written to {out.resolve()}")
    return 0


def _label_map(value: str | None) -> dict[str, int] | None:
    """--label-map: inline `name=index,...`, or a JSON file holding {"name": index, ...}."""
    from t3vis.tasks.labels import parse_label_map

    if value is None:
        return None
    path = Path(value)
    if path.suffix.lower() != ".json":
        return parse_label_map(value)
    if not path.is_file():
        raise NotFoundError(f"no label map file at {path}; give a JSON file or name=index pairs")
    try:
        mapping = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidInputError(f"cannot read the label map {path}: {e}") from None
    if not isinstance(mapping, dict) or not all(isinstance(i, int) and not isinstance(i, bool)
                                                for i in mapping.values()):
        raise InvalidInputError(f"the label map {path} must hold one JSON object of name: index, "
                                'e.g. {"sport": 0, "politics": 1}')
    return {str(name): index for name, index in mapping.items()}


def _info(args) -> int:
    from t3vis.store.reader import open_run

    run = open_run(args.run)
    print(json.dumps({"run": str(run.path), "model": run.meta["model"], "task": run.task_format.name,
                      "labels": run.label_names, "layers": run.num_layers, "heads": run.num_heads,
                      "stacks": {s.name: {"layers": s.num_layers, "heads": s.num_heads} for s in run.stacks},
                      "probe_examples": run.meta["num_probe"], "truncated": run.truncated,
                      "checkpoints": [{"step": c.step, "epoch": c.epoch, **c.metrics} for c in run.checkpoints]},
                     indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t3vis", description="Visual analytics for training Transformers.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="fine-tune the bundled model on the bundled data, record it, serve it",
                          description="classification (default): all-MiniLM-L6-v2 learns the polarity of Rotten "
                                      "Tomatoes sentences. seq2seq: an encoder-decoder warm-started from two copies "
                                      "of all-MiniLM-L6-v2 learns to write BBC News headlines from the articles' "
                                      "first sentences, trained with the Hugging Face Trainer.")
    demo.add_argument("--task", default="classification", choices=["classification", "seq2seq"],
                      help="what the demo fine-tunes the model to do (default classification)")
    demo.add_argument("--out", default=None, help=f"run folder ({_demo_default('out')})")
    demo.add_argument("--train-size", type=int, default=None, help=_demo_default("train_size"))
    demo.add_argument("--heldout-size", type=int, default=None, help=_demo_default("heldout_size"))
    demo.add_argument("--probe-train-size", type=int, default=None,
                      help=f"training examples probed as well as held-out ones ({_demo_default('probe_train_size')})")
    demo.add_argument("--epochs", type=int, default=None, help=_demo_default("epochs"))
    demo.add_argument("--snapshots-per-epoch", type=int, default=None, help=_demo_default("snapshots_per_epoch"))
    demo.add_argument("--batch-size", type=int, default=None, help=_demo_default("batch_size"))
    demo.add_argument("--max-length", type=int, default=None, help=_demo_default("max_length"))
    demo.add_argument("--seed", type=int, default=None, help=_demo_default("seed"))
    demo.add_argument("--no-serve", action="store_true", help="record only; do not start the viewer after")
    _add_serve_options(demo)
    demo.set_defaults(handler=_demo)

    serve = sub.add_parser("serve", help="open recorded runs in the browser (http://127.0.0.1:8737)")
    serve.add_argument("runs", nargs="+", metavar="RUN",
                       help="run folders to serve (nothing else is reachable); a folder a run will be "
                            "recorded in is waited for, and followed while it is written")
    _add_serve_options(serve)
    serve.set_defaults(handler=_serve)

    record = sub.add_parser("record", help="record Hugging Face checkpoints saved earlier")
    record.add_argument("checkpoints", nargs="+", help="checkpoint folders (any order; recorded by step)")
    record.add_argument("--data", required=True,
                        help="CSV, TSV, JSON (array or Lines) or Parquet file of probe examples")
    record.add_argument("--out", required=True, help="run folder to write")
    record.add_argument("--text-column", default="text", help="column holding the texts (default text)")
    record.add_argument("--label-column", default=None,
                        help="column holding the labels: class indices, or names (default label); with a "
                             "generative task, each example's category (a topic) to colour and filter by, "
                             "used where the file has it")
    record.add_argument("--label-map", default=None, metavar="MAP",
                        help="which class index each label name is, as the model was trained: "
                             "sport=0,politics=1,technology=2 or a .json file of {name: index}; needed for "
                             "names when the model's labels are placeholders (LABEL_0, ...). Names otherwise "
                             "match the model's own label names, ignoring case")
    record.add_argument("--id-column", default=None, metavar="COLUMN",
                        help="column of example ids (default: 'id' if the file has one, else row numbers); "
                             "ids that are not integers are kept as source_id and rows numbered")
    record.add_argument("--split-column", default=None, metavar="COLUMN",
                        help="column telling held-out from training examples (default: 'split' if the file "
                             "has one, else every example is 'probe')")
    record.add_argument("--task", default="classification", choices=list(TASKS),
                        help="what the checkpoints were trained to do (default classification)")
    record.add_argument("--target-column", default=None, metavar="COLUMN",
                        help="generative tasks: the column holding each text's target (seq2seq) or completion "
                             "(causal-lm; without it every token of the text is scored)")
    record.add_argument("--batch-size", type=int, default=32)
    record.add_argument("--max-length", type=int, default=128)
    record.add_argument("--pooling", default="auto", choices=["auto", "cls", "mean", "last"],
                        help="one state per layer: auto is cls/last for classifiers, the mean over target "
                             "(decoder) or source (encoder) tokens for generative tasks")
    record.add_argument("--append", action="store_true",
                        help="add checkpoints to an existing run (same probe texts, labels and model shape)")
    record.set_defaults(handler=_record)

    info = sub.add_parser("info", help="summarise a recorded run")
    info.add_argument("run")
    info.set_defaults(handler=_info)
    return parser


def _quiet_transformers() -> None:
    """The CLI prints its own progress; transformers' load reports and shard bars are noise here."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("demo", "record"):
        _quiet_transformers()
    try:
        return args.handler(args)
    except T3VisError as e:
        print(f"t3vis {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"t3vis {args.command}: interrupted; checkpoints already written are complete", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
