"""Browser tests: the built viewer against a live `t3vis` server, driven by Debian's chromium.

One server (uvicorn in a background thread, on a free port) serves a tiny recorded run built
here, two runs recorded without epochs (with and without training dynamics), and runs/demo
when it exists; one headless chromium is shared by the session. A missing
chromium or an unbuilt frontend fails the tests with the command that fixes it: CI must never
skip the browser tests silently.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import make_generative_model, make_labels, make_model, make_pairs, make_texts  # tests/conftest.py

from t3vis.server.launch import BackgroundServer

from .browser_support import DEMO_RUN, DEMO_SEQ2SEQ_RUN, ROOT, TOKEN, synthetic_run

CHROMIUM = os.environ.get("T3VIS_CHROMIUM", "/usr/bin/chromium")
# T3VIS_STATIC_DIR: test a viewer built elsewhere (`npx vite build --outDir DIR`)
STATIC_DIR = Path(os.environ.get("T3VIS_STATIC_DIR", ROOT / "src" / "t3vis" / "server" / "static"))
STATIC_INDEX = STATIC_DIR / "index.html"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-dev-shm-usage",
                 # WebGL without a GPU: ANGLE on SwiftShader (regl-scatterplot needs WebGL)
                 "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]

N_PROBE = 40          # 20 training + 20 validation probes
N_TRAIN_ONLY = 8      # training examples seen but not probed (data map only)
STEPS = (0, 5, 10)


def record_browser_run(path: Path) -> dict:
    """A 2-layer, 4-head random BERT trained a little between three checkpoints, with weights."""
    import torch

    from t3vis import Recorder

    model, tokenizer = make_model("bert", seed=3)
    texts, labels = make_texts(N_PROBE, seed=11), make_labels(N_PROBE, seed=11)
    half = N_PROBE // 2
    rec = Recorder(path, model, tokenizer, texts, labels, splits=["train"] * half + ["validation"] * half,
                   batch_size=16, label_names=["negative", "positive"], keep_weights="all")   # every step inspectable
    extra_texts, extra_labels = make_texts(N_TRAIN_ONLY, seed=5), make_labels(N_TRAIN_ONLY, seed=5)
    extra_ids = list(range(1000, 1000 + N_TRAIN_ONLY))
    rec.add_examples(extra_ids, extra_texts, extra_labels)
    train_texts, train_labels = texts[:half] + extra_texts, labels[:half] + extra_labels
    train_ids = torch.tensor(list(range(half)) + extra_ids)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    for i, step in enumerate(STEPS):
        if i:
            for _ in range(step - STEPS[i - 1]):
                enc = tokenizer(train_texts, padding=True, return_tensors="pt")
                logits = model(**enc).logits
                rec.observe(train_ids, logits, torch.tensor(train_labels))
                loss = torch.nn.functional.cross_entropy(logits, torch.tensor(train_labels))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        rec.snapshot(step=step, epoch=float(i))
    rec.close()
    return {"path": path, "texts": texts, "labels": labels, "tokenizer": tokenizer}


PLAIN_PROBE = 24      # 12 training + 12 validation probes
PLAIN_STEPS = (0, 3, 6)


def record_plain_run(path: Path) -> dict:
    """A plain PyTorch loop that knows steps only: observe() and snapshot() get no epoch, so every
    checkpoint's epoch is null (the training dynamics count an example's passes instead)."""
    import torch

    from t3vis import Recorder

    model, tokenizer = make_model("bert", seed=4)
    texts, labels = make_texts(PLAIN_PROBE, seed=21), make_labels(PLAIN_PROBE, seed=21)
    half = PLAIN_PROBE // 2
    rec = Recorder(path, model, tokenizer, texts, labels, splits=["train"] * half + ["validation"] * half,
                   batch_size=16, label_names=["negative", "positive"], keep_weights="all")   # every step inspectable
    train_ids, train_labels = torch.arange(half), torch.tensor(labels[:half])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    for i, step in enumerate(PLAIN_STEPS):
        for _ in range(step - (PLAIN_STEPS[i - 1] if i else step)):
            logits = model(**tokenizer(texts[:half], padding=True, return_tensors="pt")).logits
            rec.observe(train_ids, logits, train_labels)
            loss = torch.nn.functional.cross_entropy(logits, train_labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        rec.snapshot(step=step)
    rec.close()
    return {"path": path, "texts": texts, "labels": labels}


GEN_PROBE = 16       # 8 training + 8 validation pairs
GEN_STEPS = (0, 4, 8)


def record_generative_run(path: Path) -> dict:
    """A tiny random T5 (2 encoder, 3 decoder layers, 4 heads) trained a little on source -> target
    pairs between three checkpoints, with its weights and the training dynamics of its training half."""
    import numpy as np
    import torch

    from t3vis import Recorder
    from t3vis.tasks import get_task

    model, tokenizer = make_generative_model("t5", seed=5)
    sources, targets = make_pairs(GEN_PROBE, seed=13)
    half = GEN_PROBE // 2
    topics = [("sport", "tech", "politics")[i % 3] for i in range(GEN_PROBE)]   # a category to colour by
    rec = Recorder(path, model, tokenizer, sources, targets=targets, task="seq2seq", max_length=48, categories=topics,
                   splits=["train"] * half + ["validation"] * half, batch_size=8, keep_weights="all")
    task = get_task("seq2seq")
    examples = task.examples(model, sources[:half], targets[:half])
    batch = task.encode(model, tokenizer, examples, np.arange(half), max_length=48, device=torch.device("cpu"))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for i, step in enumerate(GEN_STEPS):
        for _ in range(step - (GEN_STEPS[i - 1] if i else step)):
            logits = model(**batch.inputs).logits
            rec.observe(torch.arange(half), logits, batch.labels)
            loss = task.losses(logits, batch).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        rec.snapshot(step=step, epoch=float(i))
    rec.close()
    return {"path": path, "sources": sources, "targets": targets, "topics": topics, "tokenizer": tokenizer}


def without_dynamics(run: Path, path: Path) -> Path:
    """A copy of a run with its training dynamics removed, as `t3vis record` gives for checkpoints
    saved without a trainer state: no epochs and no data map."""
    shutil.copytree(run, path, ignore=shutil.ignore_patterns("part-*.parquet"))
    return path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict:
    return record_browser_run(tmp_path_factory.mktemp("browser") / "tiny")


@pytest.fixture(scope="session")
def plain(tmp_path_factory) -> dict:
    """Runs recorded without epochs: "plain" (with training dynamics) and "nodyn" (without)."""
    folder = tmp_path_factory.mktemp("plain")
    run = record_plain_run(folder / "plain")
    return {**run, "nodyn": without_dynamics(run["path"], folder / "nodyn")}


@pytest.fixture(scope="session")
def gen(tmp_path_factory) -> dict:
    """A seq2seq run ("gen"): encoder, decoder and cross-attention stacks."""
    return record_generative_run(tmp_path_factory.mktemp("generative") / "gen")


@pytest.fixture(scope="session")
def built_frontend() -> Path:
    if not STATIC_INDEX.exists():
        pytest.fail(f"the viewer is not built ({STATIC_INDEX} is missing): run `make frontend` "
                    "(or `cd frontend && npm ci && npm run build`)", pytrace=False)
    if STATIC_DIR != ROOT / "src" / "t3vis" / "server" / "static":
        return STATIC_INDEX                      # built elsewhere on purpose: its age is the builder's business
    frontend = ROOT / "frontend"
    sources = [f for f in (frontend / "src").rglob("*") if f.is_file()] + \
        [frontend / n for n in ("index.html", "package-lock.json", "vite.config.ts") if (frontend / n).exists()]
    newer = [str(f.relative_to(ROOT)) for f in sources if f.stat().st_mtime > STATIC_INDEX.stat().st_mtime]
    if newer:
        pytest.fail(f"the viewer build is older than {', '.join(newer[:3])}{' ...' if len(newer) > 3 else ''}: "
                    "run `make frontend` so the tests see the current code", pytrace=False)
    return STATIC_INDEX


@pytest.fixture(scope="session")
def server(tiny, plain, built_frontend):
    from t3vis.server import create_app

    paths = [tiny["path"], plain["path"], plain["nodyn"]] + ([DEMO_RUN] if (DEMO_RUN / "run.json").exists() else [])
    live = BackgroundServer(create_app(paths, static_dir=STATIC_DIR))
    yield live
    live.stop()


@pytest.fixture(scope="session")
def gen_server(gen, built_frontend):
    """A server of the tiny seq2seq run, and of the generative demo run where it exists."""
    from t3vis.server import create_app

    paths = [gen["path"]] + ([DEMO_SEQ2SEQ_RUN] if (DEMO_SEQ2SEQ_RUN / "run.json").exists() else [])
    live = BackgroundServer(create_app(paths, static_dir=STATIC_DIR))
    yield live
    live.stop()


@pytest.fixture(scope="session")
def medium_server(tmp_path_factory, built_frontend):
    """A server of one synthetic run of 3,000 examples: its t-SNE takes the server some seconds."""
    from t3vis.server import create_app

    run = synthetic_run(tmp_path_factory.mktemp("medium") / "medium", 3000)
    live = BackgroundServer(create_app([run], static_dir=STATIC_DIR))
    yield live
    live.stop()


@pytest.fixture(scope="session")
def token_server(tiny, built_frontend):
    from t3vis.server import create_app

    live = BackgroundServer(create_app([tiny["path"]], token=TOKEN, static_dir=STATIC_DIR))
    yield live
    live.stop()


class Page:
    """A page with its console errors and API requests recorded."""

    def __init__(self, page):
        self.page = page
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on("request", lambda r: self.requests.append(r.url) if "/api/" in r.url else None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.browser_failed = report.failed


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1600, "height": 1000}, device_scale_factor=1)
    context.set_default_timeout(20_000)
    wrapped = Page(context.new_page())
    yield wrapped
    if getattr(request.node, "browser_failed", False):   # what the page showed when the test failed
        ARTIFACTS.mkdir(exist_ok=True)
        wrapped.page.screenshot(path=str(ARTIFACTS / f"failed-{request.node.name}.png"), full_page=True)
        (ARTIFACTS / f"failed-{request.node.name}.log").write_text(
            "console errors:\n" + "\n".join(wrapped.errors) + "\n\nAPI requests:\n" + "\n".join(wrapped.requests))
    context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session", autouse=True)
def _forget_old_failures():
    """Failure screenshots of an earlier session would mislead: start without them."""
    for old in ARTIFACTS.glob("failed-*"):
        old.unlink()


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives the built viewer in headless chromium")
