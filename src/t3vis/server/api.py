"""The /api routes (docs/api.md). Each route reads through the store and calls t3vis's analyses;
none holds analysis logic of its own. Routes are plain `def`s: FastAPI runs them in its
thread pool, so a slow instance view never blocks a table page.

torch is imported only inside the routes that use a model (and heads selections, whose
arithmetic lives in t3vis.analysis.heads), so `t3vis serve` starts without it.

Every task's runs are served: the data routes show the columns the run's task has
(server/columns.py) and the head routes take a `stack`. The model routes (instance view,
attention, pruning) explain and prune a classifier's classes, or a language model's target
tokens (server/generative.py: per-token scores and attention of one example); generation is
for language models only (a classification run: 422, before any model is loaded).

A run is followed while it is written: GET /api/runs/{run}/version answers 200 in every state
(waiting, ready, gone, damaged) with a version that grows whenever the run changes on disk
(server/runs.py looks at most twice a second, for all clients together); the page polls it and
refetches what changed. A run waiting for its recorder is listed as {name, waiting, detail};
its other routes answer 409 until it starts.

A selection of any size travels as a handle (server/selections.py): POST /runs/{run}/selections
takes int64 ids or a bitmap over the probe rows and answers a handle that the table, heads,
pruning and summary routes take as `selection` in place of `ids`. A handle the server no longer
holds answers 410, and the page posts the selection again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import typing
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from t3vis.errors import CorruptRunError, InvalidInputError, NotFoundError, UnsupportedModelError
from t3vis.server import models as M
from t3vis.server.lru import LRU
from t3vis.server.model_cache import ModelCache
from t3vis.server.projections import Job, Projections
from t3vis.server.runs import RunHandle, RunNotStartedError, RunRegistry
from t3vis.server.selections import SelectionExpired, SelectionStore, distinct_ids, ids_from_bytes, rows_from_bitmap
from t3vis.server.table import Tables, point_names
from t3vis.store import schema
from t3vis.store.reader import Checkpoint

log = logging.getLogger("t3vis.server")

OCTET = "application/octet-stream"
ARROW = "application/vnd.apache.arrow.stream"
DEFAULT_MAX_LENGTH = 128
ATTENTION_KEYS = 256
BASELINES = 8


class OctetResponse(Response):
    media_type = OCTET


class ArrowResponse(Response):
    media_type = ARROW


ERRORS: dict[int | str, dict[str, typing.Any]] = {code: {"model": M.Error, "description": text} for code, text in (
    (401, "no or bad token (servers bound beyond localhost)"), (404, "unknown run, checkpoint, layer, head or example"),
    (409, "the run's files are damaged or missing"), (413, "request too large"), (422, "bad parameters"))}
# the routes that take a selection handle may also answer that the server no longer holds it
EXPIRED: dict[int | str, dict[str, typing.Any]] = {410: {"model": M.Error, "description": "the selection handle "
                                                         "is not held (evicted, or the server restarted): post the "
                                                         "selection again"}}


def _header(description: str, kind: str = "string") -> dict:
    return {"description": description, "schema": {"type": kind}}


def _binary(description: str, media: str = OCTET, headers: dict | None = None) -> dict:
    return {200: {"description": description, "content": {media: {"schema": {"type": "string", "format": "binary"}}},
                  "headers": headers or {}}}


@dataclass
class Context:
    registry: RunRegistry
    tables: Tables
    projections: Projections
    models: ModelCache
    attention_texts: LRU[tuple[str, str | None]]   # free (text, target) of recent instance views, by key
    baselines: LRU                            # unmasked evaluations, by (run, step, weights, ids)
    selections: SelectionStore                # selection handles -> ids, per run

    def run(self, name: str) -> RunHandle:
        return self.registry.get(name)


def make_context(registry: RunRegistry, model_cache: int) -> Context:
    return Context(registry, Tables(), Projections(), ModelCache(model_cache), LRU(ATTENTION_KEYS),
                   LRU(BASELINES), SelectionStore())


def get_context(request: Request) -> Context:
    return request.app.state.t3vis


RunName = typing.Annotated[str, Path(description="run name (GET /api/runs lists them)", max_length=255)]
Step = typing.Annotated[int, Path(description="checkpoint step")]
StackParam = typing.Annotated[str | None, Query(description="an attention stack of the run (GET /api/runs/{run} "
                                                            "lists them); absent: the default stack",
                                                min_length=1, max_length=64)]
Ctx = typing.Annotated[Context, Depends(get_context)]

router = APIRouter(prefix="/api", responses=ERRORS)


def _finite(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _matrix(a) -> list:
    return [[_finite(v) for v in row] for row in np.asarray(a, dtype=np.float64)]


def _arrow_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


# -- runs ------------------------------------------------------------------------------

def _checkpoint_info(ck: Checkpoint) -> M.CheckpointInfo:
    metrics = {str(k): _finite(v) for k, v in ck.metrics.items()
               if (isinstance(v, (int, float)) and not isinstance(v, bool)) or v is None}
    epoch = ck.epoch if isinstance(ck.epoch, (int, float)) and not isinstance(ck.epoch, bool) else None
    time = ck.meta.get("time")
    return M.CheckpointInfo(step=ck.step, epoch=_finite(epoch), time=time if isinstance(time, str) else None,
                            metrics=metrics, has_weights=ck.has_weights(confined=True))


def _summary(h: RunHandle, checkpoints) -> dict:
    meta = h.meta
    model: dict = meta.get("model") or {}
    name = model.get("name_or_path") or model.get("architecture") or "unknown model"
    params = model.get("num_parameters")
    architecture = model.get("architecture")
    return dict(name=h.name, model=str(name), architecture=architecture if isinstance(architecture, str) else None,
                num_parameters=int(params) if isinstance(params, int) else None,
                num_examples=h.num_examples(), num_probe=h.run.num_probe or 0,
                num_layers=h.run.num_layers, num_heads=h.run.num_heads, hidden_size=h.run.hidden_size,
                label_names=[str(n) for n in h.run.label_names], num_checkpoints=len(checkpoints),
                task=h.run.task_format.name)


@router.get("/runs", response_model=list[M.RunSummary | M.DamagedRun | M.WaitingRun],
            summary="every run this server serves")
def list_runs(ctx: Ctx):
    return [_list_entry(h) for h in ctx.registry.handles()]


def _list_entry(h: RunHandle) -> M.RunSummary | M.DamagedRun | M.WaitingRun:
    """One damaged run must not take the list of the others down with it."""
    try:
        return M.RunSummary(**_summary(h, h.checkpoints()))
    except RunNotStartedError as e:
        return M.WaitingRun(name=h.name, detail=str(e))
    except CorruptRunError as e:
        return M.DamagedRun(name=h.name, error=str(e))


@router.get("/runs/{run}/version", response_model=M.RunVersion,
            summary="the run's state and version, to poll while it is written (200 whatever its state)")
def run_version(run: RunName, ctx: Ctx):
    look = ctx.run(run).look()          # at most one look at the disk per half second, for every client
    return M.RunVersion(version=look.version, state=look.state, steps=look.steps, dynamics=look.dynamics,
                        detail=look.detail)


@router.get("/runs/{run}", response_model=M.RunInfo, summary="one run: metadata and checkpoints")
def run_info(run: RunName, ctx: Ctx):
    h = ctx.run(run)
    cks = h.checkpoints()
    infos = [_checkpoint_info(ck) for ck in cks]
    max_length = h.meta.get("max_length")
    return M.RunInfo(**_summary(h, cks), pooling=h.meta.get("pooling"),
                     max_length=int(max_length) if isinstance(max_length, int) else None, checkpoints=infos,
                     has_dynamics=bool(h.dynamics_version().files), has_weights=any(i.has_weights for i in infos),
                     attention_summaries=list(schema.ATTENTION_SUMMARIES),
                     saliency_methods=list(typing.get_args(M.SaliencyMethod)),
                     projection_methods=list(typing.get_args(M.ProjectionMethod)),
                     stacks=[M.StackSummary(name=s.name, num_layers=s.num_layers, num_heads=s.num_heads,
                                            has_hidden=bool(s.hidden)) for s in h.run.stacks],
                     default_stack=h.run.default_stack, point_columns=list(h.columns.wide))


@router.get("/runs/{run}/curves", response_model=M.Curves, summary="checkpoint metrics and training curves")
def curves(run: RunName, ctx: Ctx):
    h = ctx.run(run)
    points = []
    for ck in h.checkpoints():
        info = _checkpoint_info(ck)
        points.append(M.CurvePoint(step=info.step, epoch=info.epoch, metrics=info.metrics))
    return M.Curves(checkpoints=points, training=[M.TrainingPoint(**r) for r in ctx.tables.training_curve(h)])


# -- points and projections ------------------------------------------------------------

@router.get("/runs/{run}/checkpoints/{step}/points", response_class=ArrowResponse,
            responses=_binary("Arrow IPC stream, one row per probe row", ARROW,
                              {"X-T3vis-Rows": _header("rows", "integer")}),
            summary="per-point columns of a checkpoint (Arrow)")
def points(run: RunName, step: Step, ctx: Ctx,
           columns: str | None = Query(None, max_length=1_000, description="comma-separated point columns to "
                                       "answer (e.g. id,label), in this order; absent: all (the run info's "
                                       "point_columns)")):
    h = ctx.run(run)
    ck = h.checkpoint(step)
    table = ctx.tables.points(h, ck, point_names(h, columns))
    return ArrowResponse(_arrow_bytes(table), headers={"X-T3vis-Rows": str(table.num_rows)})


@router.get("/runs/{run}/checkpoints/{step}/projection", response_class=OctetResponse,
            responses={**_binary("float32 (N, 3) row-major: x, y, neighbourhood preservation", OCTET,
                                 {"X-T3vis-Rows": _header("N", "integer"),
                                  "X-T3vis-Sampled": _header("true when fitted on a sample (above 25,000 "
                                                             "points) and the rest placed"),
                                  "X-T3vis-Mean-Preservation": _header("mean preservation over the points measured "
                                                                       "(a sample of 2,000 above 50,000)", "number")}),
                       202: {"model": M.ProjectionStatus, "description": "being computed: poll the same URL"}},
            description="encoding=f32 (default): float32 (N, 3) row-major. encoding=u16: 16 + 5N bytes, "
                        "little-endian: float32 x_min, x_max, y_min, y_max; N uint16 x (0 -> x_min, 65535 -> "
                        "x_max); N uint16 y; N uint8 preservation (round(p * 254); 255 = missing).",
            summary="2-D layout of one layer at one checkpoint (binary; 202 while it is computed)")
def projection(run: RunName, step: Step, ctx: Ctx,
               layer: int = Query(description="0 = embeddings, 1..L the blocks", ge=0, le=100_000),
               method: M.ProjectionMethod = Query("umap"),
               aligned: bool = Query(True, description="start from the neighbouring checkpoint's layout"),
               align: typing.Literal["previous", "final"] = Query(
                   "previous", description="with aligned: fit each checkpoint onto the one before it (previous: "
                   "a new checkpoint never moves earlier layouts) or anchor at the last checkpoint (final)"),
               stack: str | None = Query(None, max_length=64, description="whose hidden states (an encoder-decoder's "
                                         "encoder or decoder); default: the run's default stack"),
               encoding: typing.Literal["f32", "u16"] = Query(
                   "f32", description="f32: float32 (N, 3); u16: quantised, 5 bytes a point (see the description)")):
    h = ctx.run(run)
    answer = ctx.projections.request(h, h.checkpoint(step), layer, method, aligned, stack, align=align)
    if isinstance(answer, Job):
        status = M.ProjectionStatus(status=answer.status, progress=answer.progress, message=answer.message)
        return JSONResponse(status.model_dump(), status_code=202)
    data = answer.data
    if encoding == "u16":
        from t3vis.server.encodings import projection_u16

        data = projection_u16(data)
    return OctetResponse(data, headers={"X-T3vis-Rows": str(answer.rows),
                                               "X-T3vis-Sampled": "true" if answer.sampled else "false",
                                               "X-T3vis-Mean-Preservation": f"{answer.mean_preservation:.6f}"})


# -- table and examples --------------------------------------------------------------

@router.post("/runs/{run}/table", response_model=M.TablePage, responses=EXPIRED,
             summary="filter, sort and page the examples")
def table(run: RunName, query: M.TableQuery, ctx: Ctx, after: BackgroundTasks):
    h = ctx.run(run)
    page = ctx.tables.page(h, query, _chosen(ctx, h, query.ids, query.selection))
    # a page that shows a table will soon select in it: its summary's table is built now, after
    # this answer, not on the first lasso (1.6 s for a million examples)
    after.add_task(ctx.tables.prepare_selections, h)
    return page


def _chosen(ctx: Context, h: RunHandle, ids: list[int] | None, selection: str | None) -> np.ndarray | None:
    """The selected ids of a request: its ids (in their order), a handle's (sorted, distinct), or None
    where it names none. Both is a 422; a handle not held for this run a 410."""
    if ids is not None and selection is not None:
        raise InvalidInputError("give either ids or selection (a handle from POST /api/runs/{run}/selections), "
                                "not both")
    if selection is not None:
        try:
            return ctx.selections.get(h.name, selection)
        except SelectionExpired as e:
            raise HTTPException(status_code=410, detail=e.detail) from None
    return None if ids is None else np.asarray(ids, dtype=np.int64)


@router.post("/runs/{run}/selection", response_model=M.SelectionSummary, responses=EXPIRED,
             summary="how many selected examples the table lists, are not probed, have no text")
def selection(run: RunName, query: M.SelectionQuery, ctx: Ctx):
    h = ctx.run(run)
    chosen = _chosen(ctx, h, query.ids, query.selection)
    if chosen is None:
        raise InvalidInputError("give the selection: ids (a list) or selection (a handle from "
                                "POST /api/runs/{run}/selections)")
    return ctx.tables.selection(h, chosen)


SELECTION_BODY = {"requestBody": {"required": True, "content": {
    OCTET: {"schema": {"type": "string", "format": "binary", "description": "the selected ids as little-endian "
                       "int64 (any count); with ?over=probes a bitmap over the probe rows: bit i (byte i >> 3, "
                       "bit i & 7, least significant first) set when probe row i is selected, ceil(num_probe / 8) "
                       "bytes"}},
    "application/json": {"schema": M.NewSelection.model_json_schema()}}}}


@router.post("/runs/{run}/selections", response_model=M.SelectionHandleAnswer, openapi_extra=SELECTION_BODY,
             summary="hold a selection of any size; answers its handle (and what it holds)")
async def new_selection(run: RunName, request: Request, ctx: Ctx,
                        over: typing.Literal["probes"] | None = Query(
                            None, description="probes: the octet-stream body is a bitmap over the probe rows")):
    body = await request.body()
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return await run_in_threadpool(_hold_selection, ctx, run, body, kind, over)


def _hold_selection(ctx: Context, run: str, body: bytes, kind: str, over: str | None) -> M.SelectionHandleAnswer:
    h = ctx.run(run)
    if kind == OCTET and over == "probes":
        probe_ids = ctx.tables.probe_ids(h)              # probe row i -> its id
        ids = distinct_ids(probe_ids[rows_from_bitmap(body, len(probe_ids))])
    elif kind == OCTET:
        ids = ids_from_bytes(body)
    elif kind == "application/json" or kind.endswith("+json"):
        if over is not None:
            raise InvalidInputError("over=probes takes a bitmap: send it as application/octet-stream")
        ids = distinct_ids(_new_selection(body).ids)
    else:
        raise InvalidInputError(f"a selection is sent as {OCTET} (int64 ids, or a bitmap with ?over=probes) or "
                                f"as application/json {{\"ids\": [...]}}; got content type {kind or 'none'!r}")
    if not len(ids):
        raise InvalidInputError("the selection is empty: select at least one example")
    summary = ctx.tables.selection(h, ids)          # first: a run that cannot answer holds no handle
    handle = ctx.selections.put(h.name, ids)
    return M.SelectionHandleAnswer(handle=handle, count=len(ids), **summary.model_dump())


def _new_selection(body: bytes) -> M.NewSelection:
    """A JSON selection body; what does not fit is a 422 worded as FastAPI's own."""
    try:
        return M.NewSelection.model_validate_json(body)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err.get("loc", ()))} for err in e.errors()]) from None


@router.get("/runs/{run}/examples/{example_id}", response_model=M.ExampleDetail,
            summary="one example across checkpoints")
def example(run: RunName, ctx: Ctx,
            example_id: int = Path(description="the example's stable id", ge=-(2**63), le=2**63 - 1)):
    h = ctx.run(run)
    ex = ctx.tables.example(h, example_id)
    probe_row = ex["probe_row"] if ex["probe_row"] is not None and ex["probe_row"] >= 0 else None
    history = ctx.tables.history(h, h.checkpoints(), example_id) if probe_row is not None else []
    dynamics, forgetting = None, None
    observations = ctx.tables.observations(h, example_id)
    if len(observations):
        from t3vis.analysis.checkpoints import forgetting_from_dynamics

        _, datamap = h.datamap()
        row = datamap[datamap["id"] == example_id]
        if len(row):
            r = row.iloc[0]
            dynamics = M.ExampleDynamics(confidence=_finite(r["confidence"]), variability=_finite(r["variability"]),
                                         correctness=_finite(r["correctness"]), region=str(r["region"]))
        forgetting = int(forgetting_from_dynamics(observations)["forgetting_events"].iloc[0])
    return M.ExampleDetail(id=ex["id"], text=ex["text"], split=ex["split"], label=ex["label"], probe_row=probe_row,
                           history=[M.HistoryEntry(**e) for e in history], dynamics=dynamics,
                           forgetting_events=forgetting, target=ex.get("target"))


# -- heads -----------------------------------------------------------------------------

@router.post("/runs/{run}/checkpoints/{step}/heads", response_model=M.HeadsAnswer, responses=EXPIRED,
             summary="head importance (L x H) of one stack for the probe set, a selection or one example")
def heads(run: RunName, step: Step, query: M.HeadsQuery, ctx: Ctx):
    h = ctx.run(run)
    ck = h.checkpoint(step)
    stack = h.run.stack(query.stack).name           # 404 naming the stacks there are
    ids = _chosen(ctx, h, query.ids, query.selection)
    if query.scope == "all":
        importance, n, skipped = ck.stack_head_importance(stack), int(h.meta.get("num_probe", 0)), 0
    else:
        if ids is None or not len(ids):
            raise InvalidInputError(f"scope {query.scope!r} needs ids (or a selection handle): the examples to "
                                    "measure importance over")
        if query.scope == "example" and len(ids) != 1:
            raise InvalidInputError(f"scope 'example' takes exactly one id; got {len(ids)} "
                                    "(use scope 'selection' for several)")
        chosen = ctx.tables.probe_rows(h, ids)
        from t3vis.analysis.heads import importance_from_gate_gradients

        importance = importance_from_gate_gradients(ck.example_gate_gradients(chosen.rows, stack=stack),
                                                    normalize=True)
        n, skipped = len(chosen.rows), chosen.skipped
    stored = ck.stack_heads(stack)
    summaries = {name: _matrix(stored[f"attention_{name}"])
                 for name in schema.ATTENTION_SUMMARIES + schema.CROSS_ATTENTION_SUMMARIES
                 if f"attention_{name}" in stored}
    return M.HeadsAnswer(importance=_matrix(importance), scope=query.scope, n=n, skipped=skipped, summaries=summaries,
                         stack=stack)


@router.get("/runs/{run}/checkpoints/{step}/heads/thumbnails", response_class=OctetResponse,
            responses=_binary("uint8 (L, H, K, K), each thumbnail scaled to 0..255 by its own max", OCTET,
                              {"X-T3vis-Shape": _header("L,H,K,K")}),
            summary="per-head mean attention thumbnails of one stack (binary)")
def thumbnails(run: RunName, step: Step, ctx: Ctx, stack: StackParam = None):
    ck = ctx.run(run).checkpoint(step)
    t = np.asarray(ck.stack_heads(stack)["thumbnails"], dtype=np.float64)              # (L, H, K, K)
    t = np.where(np.isfinite(t), t, 0.0)
    peak = t.max(axis=(2, 3), keepdims=True)
    scaled = np.divide(t, peak, out=np.zeros_like(t), where=peak > 0)
    data = np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8)
    return OctetResponse(data.tobytes(), headers={"X-T3vis-Shape": ",".join(map(str, data.shape))})


@router.get("/runs/{run}/heads/history", response_model=M.HeadsHistory,
            summary="head importance of one stack at every checkpoint (C, L, H)")
def heads_history(run: RunName, ctx: Ctx, stack: StackParam = None):
    from t3vis.analysis.checkpoints import stack_importance

    h = ctx.run(run)
    name = h.run.stack(stack).name                  # 404 naming the stacks there are
    cks = [ck for ck in h.checkpoints() if _heads_readable(h, ck, name)]
    if not cks:
        return M.HeadsHistory(steps=[], importance=[])
    series = stack_importance([ck.stack_head_importance(name) for ck in cks])
    return M.HeadsHistory(steps=[ck.step for ck in cks], importance=[_matrix(m) for m in series])


def _heads_readable(h: RunHandle, ck: Checkpoint, stack: str) -> bool:
    """Whether the checkpoint's head data of `stack` reads; a damaged one is left out of the history
    (its own routes answer why) rather than taking the other checkpoints down with it."""
    try:
        _ = ck.stack_heads(stack)           # reads and checks heads.npz (cached on the checkpoint)
    except CorruptRunError as e:
        log.warning("leaving checkpoint %s of run %s out of the head history: %s", ck.step, h.name, e)
        return False
    return True


# -- instance view and pruning (a loaded model) ------------------------------------------

def _loaded(ctx: Context, h: RunHandle, ck):
    def load():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()          # per-load "Loading weights" bars are noise in a server log
        return ck.load_model(confined=True)     # never weights outside the run's own folders

    return ctx.models.get((h.name, ck.step, str(ck.path), h.checkpoint_stamp(ck)), load)


def _max_length(h: RunHandle) -> int:
    value = h.meta.get("max_length")
    return int(value) if isinstance(value, int) and value > 0 else DEFAULT_MAX_LENGTH


def _task(h: RunHandle):
    """The run's Task (t3vis.tasks), which encodes, scores and explains its examples."""
    from t3vis.tasks import get_task

    return get_task(h.run.task_format.name)


def _language_model_view(h: RunHandle, view: str) -> None:
    """Generation continues texts with a language model: a run of a task with classes is answered
    422, before a model is loaded."""
    task = h.run.task_format
    if task.has_classes:
        raise UnsupportedModelError(f"the {view} is for language models (causal-lm and seq2seq runs); run "
                                    f"{h.name!r} is a {task.name} run: its instance view explains its classes")


def _no_generative_fields(query, fields: tuple[str, ...], h: RunHandle) -> None:
    given = [f for f in fields if getattr(query, f) is not None and getattr(query, f) is not False]
    if given:
        raise InvalidInputError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for generative runs "
                                f"(causal-lm, seq2seq); run {h.name!r} is a {h.run.task_format.name} run")


def _remember_text(ctx: Context, text: str, target: str | None = None) -> str:
    """A key for the attention request of a free text (and its target)."""
    data = text if target is None else f"{text}\x00{target}"
    key = hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    ctx.attention_texts.put(key, (text, target))
    return key


def _target(target) -> str | None:
    """A stored or given target; None where there is none ("" in a causal-lm run: the whole text is scored)."""
    return target if isinstance(target, str) and target.strip() else None


def _sequence_example(ctx: Context, h: RunHandle, example_id: int | None, text: str | None,
                      target_text: str | None) -> tuple[str, str | None, str]:
    """(text, target, attention_id) of a generative run's example by id, or of a free text and its target."""
    if (example_id is None) == (text is None):
        raise InvalidInputError("give exactly one of id (an example of the run) and text (any text)")
    if example_id is not None:
        if target_text is not None:
            raise InvalidInputError("target_text goes with a free text; an example by id has its own target")
        ex = ctx.tables.example(h, example_id)
        text, target, attention_id = ex["text"], _target(ex.get("target")), f"id={example_id}"
    else:
        target = target_text
        attention_id = ""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError("the text is empty; give a text with at least one word")
    if example_id is None:
        attention_id = f"key={_remember_text(ctx, text, target)}"
    return text, target, attention_id


@router.post("/runs/{run}/checkpoints/{step}/instance", response_model=M.InstanceAnswer | M.SequenceInstanceAnswer,
             summary="tokens, probabilities and saliency of one example or text")
def instance(run: RunName, step: Step, query: M.InstanceQuery, ctx: Ctx):
    h = ctx.run(run)
    ck = h.checkpoint(step)
    if h.run.task_format.has_classes:
        return _class_instance(ctx, h, ck, query)
    return _sequence_instance(ctx, h, ck, query)


def _class_instance(ctx: Context, h: RunHandle, ck: Checkpoint, query: M.InstanceQuery) -> M.InstanceAnswer:
    _no_generative_fields(query, ("target_text", "token", "foil", "matrix"), h)
    if (query.id is None) == (query.text is None):
        raise InvalidInputError("give exactly one of id (an example of the run) and text (any sentence)")
    if query.id is not None:
        ex = ctx.tables.example(h, query.id)
        text, label, attention_id = ex["text"], ex["label"], f"id={query.id}"
    else:
        text, label = query.text, None
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError("the text is empty; give a sentence with at least one word")
    if query.id is None:
        attention_id = f"key={_remember_text(ctx, text)}"
    num_labels = len(h.run.label_names)
    if query.target is not None and not 0 <= query.target < num_labels:
        raise InvalidInputError(f"target {query.target} is outside the run's classes 0..{num_labels - 1}")
    entry = _loaded(ctx, h, ck)
    import t3vis

    with entry.lock:
        result = t3vis.evaluate(entry.model, entry.tokenizer, [text], [label if label is not None else 0],
                                max_length=_max_length(h), layout=entry.layout)
        attribution = t3vis.explain(entry.model, entry.tokenizer, [text], query.method, target=query.target,
                                    max_length=_max_length(h))[0]
    return M.InstanceAnswer(tokens=list(attribution.tokens), probs=[_finite(p) for p in result.probs[0]],
                            pred=int(result.predictions[0]), label=label,
                            loss=_finite(result.losses[0]) if label is not None else None,
                            target=int(attribution.target), method=attribution.method,
                            scores=[_finite(s) for s in attribution.scores], delta=_finite(attribution.delta),
                            delta_relative=_finite(getattr(attribution, "delta_relative", None)),
                            n_steps=attribution.n_steps if attribution.method == "integrated_gradients" else None,
                            attention_id=attention_id)


def _sequence_instance(ctx: Context, h: RunHandle, ck: Checkpoint,
                       query: M.InstanceQuery) -> M.SequenceInstanceAnswer:
    """A generative example: its target tokens scored teacher-forced, and on request one target token's
    saliency row (and the whole matrix), each equal to t3vis.explain's."""
    task_name = h.run.task_format.name
    if query.target is not None:
        raise InvalidInputError(f"target names a class; a {task_name} run has none: ask for a target token's "
                                "saliency with token= (its index among the target tokens)")
    if query.foil is not None and query.token is None and not query.matrix:
        raise InvalidInputError("foil= contrasts a target token with another: give the target token as token= "
                                "(or ask for the matrix)")
    text, target, attention_id = _sequence_example(ctx, h, query.id, query.text, query.target_text)
    entry = _loaded(ctx, h, ck)
    task = _task(h)
    import t3vis
    from t3vis.server.generative import encode, score

    max_length = _max_length(h)
    with entry.lock:
        memo = entry.scored.get((text, target))
        if memo is None:
            encoded = encode(entry.model, entry.tokenizer, task, text, target, max_length)
            memo = (encoded, score(entry.model, task, encoded))
            entry.scored.put((text, target), memo)
        encoded, scores = memo
        n = len(encoded.target_ids)
        if query.token is not None and query.token >= n:
            raise InvalidInputError(f"target token {query.token} is out of range: the example has {n} target "
                                    f"tokens (0..{n - 1})")
        attribution = None
        if query.matrix or query.token is not None:
            attribution = t3vis.explain(entry.model, entry.tokenizer, [text], query.method, task=task,
                                        targets=None if target is None else [target],
                                        token=None if query.matrix else [query.token], foil=query.foil,
                                        max_length=max_length)[0]
    tokenizer = entry.tokenizer
    answer = M.SequenceInstanceAnswer(
        task=task_name, input_tokens=encoded.input_tokens, stream_lengths=encoded.stream_lengths,
        target_tokens=tokenizer.convert_ids_to_tokens(encoded.target_ids.tolist()),
        target_ids=encoded.target_ids.tolist(), predicted_at=encoded.predicted_at.tolist(),
        target_probs=[_finite(v) for v in scores.prob], target_nll=[_finite(v) for v in scores.nll],
        top1_ids=scores.top1.tolist(), top1_tokens=tokenizer.convert_ids_to_tokens(scores.top1.tolist()),
        loss=_finite(scores.loss), perplexity=_finite(scores.perplexity), mean_prob=_finite(scores.mean_prob),
        token_accuracy=_finite(scores.token_accuracy), method=query.method, token=query.token,
        attention_id=attention_id)
    if attribution is None:
        return answer
    row = int(np.flatnonzero(attribution.rows == query.token)[0]) if query.token is not None else None
    delta, relative = attribution.delta, attribution.delta_relative
    updates: dict = {"foil": int(attribution.foil_ids[0]) if attribution.foil_ids is not None else None}
    if row is not None:
        updates.update(scores=[_finite(v) for v in attribution.scores[row]],
                       delta=_finite(delta[row]) if delta is not None else None,
                       delta_relative=_finite(relative[row]) if relative is not None else None)
    if query.matrix:
        updates.update(matrix=_matrix(attribution.scores),
                       matrix_delta=[_finite(v) for v in delta] if delta is not None else None)
    return answer.model_copy(update=updates)


@router.get("/runs/{run}/checkpoints/{step}/instance/attention", response_class=OctetResponse,
            responses=_binary("uint8 (L, H, Tq, Tk): attention of every head of one stack, each query row scaled "
                              "by 255", OCTET,
                              {"X-T3vis-Shape": _header("L,H,Tq,Tk"),
                               "X-T3vis-Stack": _header("generative runs: the stack shown"),
                               "X-T3vis-Query-Tokens": _header("generative runs: the query tokens, a JSON list "
                                                               "(ASCII, \\u-escaped)"),
                               "X-T3vis-Key-Tokens": _header("generative runs: the key tokens, a JSON list")}),
            summary="attention of every head of a stack for one example or text (binary)")
def instance_attention(run: RunName, step: Step, ctx: Ctx,
                       id: int | None = Query(None, description="an example id", ge=-(2**63), le=2**63 - 1),
                       text: str | None = Query(None, description="any text", min_length=1, max_length=M.MAX_TEXT),
                       key: str | None = Query(None, description="attention_id key of an instance answer",
                                               max_length=64),
                       target_text: str | None = Query(None, description="generative runs, with text: its target "
                                                       "(seq2seq) or completion (causal-lm)", min_length=1,
                                                       max_length=M.MAX_TEXT),
                       stack: StackParam = None):
    h = ctx.run(run)
    ck = h.checkpoint(step)
    stack_name = h.run.stack(stack).name            # 404 naming the stacks there are
    if sum(x is not None for x in (id, text, key)) != 1:
        raise InvalidInputError("give exactly one of id, text and key")
    target: str | None = None
    if key is not None:
        if target_text is not None:
            raise InvalidInputError("target_text goes with text; a key names a text and its target already")
        remembered = ctx.attention_texts.get(key)
        if remembered is None:
            raise NotFoundError(f"no text under attention key {key!r} (keys last for the latest "
                                f"{ATTENTION_KEYS} texts); post the instance request again")
        text, target = remembered
    if not h.run.task_format.has_classes:
        if key is None:
            text, target, _ = _sequence_example(ctx, h, id, text, target_text)
        return _sequence_attention(ctx, h, ck, stack_name, text, target)
    if target_text is not None:
        raise InvalidInputError(f"target_text is for generative runs; run {h.name!r} is a classification run")
    if id is not None:
        text = ctx.tables.example(h, id)["text"]
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError("the text is empty; give a sentence with at least one word")
    entry = _loaded(ctx, h, ck)
    from t3vis.server.instance import attention_u8

    with entry.lock:
        data = attention_u8(entry.model, entry.tokenizer, text, _max_length(h))
    return OctetResponse(data.tobytes(), headers={"X-T3vis-Shape": ",".join(map(str, data.shape))})


def _sequence_attention(ctx: Context, h: RunHandle, ck: Checkpoint, stack: str, text, target) -> OctetResponse:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError("the text is empty; give a text with at least one word")
    entry = _loaded(ctx, h, ck)
    from t3vis.server.generative import encode, stack_attention
    from t3vis.server.instance import as_u8

    with entry.lock:
        encoded = encode(entry.model, entry.tokenizer, _task(h), text, target, _max_length(h))
        att, queries, keys = stack_attention(entry.model, entry.stacks, stack, encoded)
    data = as_u8(att)
    return OctetResponse(data.tobytes(), headers={"X-T3vis-Shape": ",".join(map(str, data.shape)),
                                                  "X-T3vis-Stack": stack,
                                                  "X-T3vis-Query-Tokens": json.dumps(queries, ensure_ascii=True),
                                                  "X-T3vis-Key-Tokens": json.dumps(keys, ensure_ascii=True)})


# -- generation ------------------------------------------------------------------------

@router.post("/runs/{run}/checkpoints/{step}/generate", response_model=M.GenerateAnswer,
             summary="greedy generation of a generative run's model for one example or text")
def generate(run: RunName, step: Step, query: M.GenerateQuery, ctx: Ctx):
    h = ctx.run(run)
    ck = h.checkpoint(step)
    _language_model_view(h, "generation")
    text, target, _ = _sequence_example(ctx, h, query.id, query.text, query.target_text)
    entry = _loaded(ctx, h, ck)
    task = _task(h)
    import t3vis
    from t3vis.server.generative import check_positions

    check_positions(entry.model, entry.tokenizer, [text], query.max_new_tokens, _max_length(h))
    with entry.lock:
        out = t3vis.generate(entry.model, entry.tokenizer, [text], query.max_new_tokens, task=task,
                             max_length=_max_length(h))[0]
        reference = _reference(entry, task, text, target, _max_length(h))
    ids = out.token_ids.tolist()
    return M.GenerateAnswer(prompt=text, tokens=list(out.tokens), token_ids=ids, probs=[_finite(p) for p in out.probs],
                            text=out.text, finished=out.finished,
                            reference_tokens=entry.tokenizer.convert_ids_to_tokens(reference),
                            reference_ids=reference,
                            matches=[i < len(reference) and t == reference[i] for i, t in enumerate(ids)])


def _reference(entry, task, text: str, target: str | None, max_length: int) -> list[int]:
    """The target token ids as the task scores them; none where the example has no target or completion.
    The caller holds the model's lock."""
    if target is None:
        return []
    from t3vis.server.generative import encode

    return encode(entry.model, entry.tokenizer, task, text, target, max_length).target_ids.tolist()


# -- pruning -----------------------------------------------------------------------------

@router.post("/runs/{run}/checkpoints/{step}/prune", response_model=M.PruneAnswer | M.GenerativePruneAnswer,
             responses=EXPIRED, summary="measures with heads masked: a classifier's accuracy and flips, a language "
                                        "model's loss, perplexity, token accuracy and generations")
def prune(run: RunName, step: Step, query: M.PruneQuery, ctx: Ctx):
    h = ctx.run(run)
    ck = h.checkpoint(step)
    masks = _stack_masks(h, query.masked_heads)
    ids = _chosen(ctx, h, query.ids, query.selection)
    if ids is not None:
        if not len(ids):
            raise InvalidInputError("ids is empty: give the examples to evaluate, or null for the whole probe set")
        chosen = ctx.tables.probe_rows(h, ids)
    else:
        chosen = ctx.tables.probe_set(h)
        if not len(chosen.ids):
            raise InvalidInputError(f"run {h.name!r} has no probe examples to evaluate")
    entry = _loaded(ctx, h, ck)
    baseline_key = (h.name, ck.step, str(ck.path), h.checkpoint_stamp(ck),
                    hashlib.sha256(chosen.ids.tobytes()).hexdigest())
    if h.run.task_format.has_classes:
        sample = _estimate_sample(len(chosen.ids), query.seed) if query.estimate else None
        return _prune_classifier(ctx, h, entry, chosen, _model_masks(entry, masks), baseline_key, sample)
    return _prune_language_model(ctx, h, entry, chosen, masks, query.max_new_tokens, baseline_key)


def _stack_masks(h: RunHandle, masked_heads) -> dict[str, dict[int, list[int]]]:
    """{stack: {layer: heads}} from [[layer, head]] (the default stack) or {stack: [[layer, head]]};
    an unknown stack is a 404 naming the run's (layer and head ranges are checked by evaluate)."""
    by_stack = {h.run.default_stack: masked_heads} if isinstance(masked_heads, list) else masked_heads
    masks: dict[str, dict[int, list[int]]] = {}
    for name, pairs in by_stack.items():
        heads = masks.setdefault(h.run.stack(name).name, {})
        for layer, head in pairs:
            heads.setdefault(layer, []).append(head)
    return masks


def _model_masks(entry, masks: dict[str, dict[int, list[int]]]) -> dict:
    """The masks as t3vis.evaluate takes them: {layer: heads} for a single-stack model, else per stack."""
    if len(entry.stacks) == 1:
        return next(iter(masks.values()), {})
    return masks


def _estimate_sample(n: int, seed: int) -> np.ndarray | None:
    """The rows an estimate evaluates: a simple random sample of M.PRUNE_SAMPLE drawn by seed, in
    row order; None (evaluate them all, exactly) when there are no more examples than that."""
    if n <= M.PRUNE_SAMPLE:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, M.PRUNE_SAMPLE, replace=False))


def _prune_classifier(ctx: Context, h: RunHandle, entry, chosen, masked: dict, baseline_key: tuple,
                      sample: np.ndarray | None) -> M.PruneAnswer:
    """Exact figures over every chosen example, or (sample given) an estimate from those rows."""
    import t3vis

    rows = np.arange(len(chosen.ids)) if sample is None else sample
    ids, labels = chosen.ids[rows], chosen.labels[rows]
    texts = [chosen.texts[i] for i in rows]
    # the exact figures in evaluate's default batches (so they equal its figures); a sample in one
    # batch: on CPU one pass of 128 costs about a third less than four of 32 (bench/bench_prune.py)
    options = {"max_length": _max_length(h), "layout": entry.layout, **({} if sample is None else
                                                                         {"batch_size": len(rows)})}

    def unmasked(examples: list[str], gold: np.ndarray):
        return t3vis.evaluate(entry.model, entry.tokenizer, examples, gold, **options)

    with entry.lock:
        after = t3vis.evaluate(entry.model, entry.tokenizer, texts, labels, masked_heads=masked, **options)
        whole = ctx.baselines.get(baseline_key)           # every chosen example's unmasked figures
        if whole is None and sample is None:
            whole = unmasked(texts, labels)
            ctx.baselines.put(baseline_key, whole)
        if whole is not None:                             # known exactly: only "after" is estimated
            before_predictions = whole.predictions[rows]
            before_score = M.Score(accuracy=_finite(whole.accuracy), loss=_finite(whole.loss))
        else:                                             # an estimate ahead of the exact figures: the sample's
            key = (*baseline_key, "sample", rows.tobytes())
            sampled = ctx.baselines.get(key)
            if sampled is None:
                sampled = unmasked(texts, labels)
                ctx.baselines.put(key, sampled)
            before_predictions = sampled.predictions
            before_score = _estimated_score(sampled, len(chosen.ids))
    changed = np.flatnonzero(before_predictions != after.predictions)
    flips = [M.Flip(id=int(ids[i]), before=int(before_predictions[i]), after=int(after.predictions[i]),
                    label=int(labels[i])) for i in changed]
    n = len(chosen.ids)
    if sample is None:
        return M.PruneAnswer(n=n, skipped=chosen.skipped, before=before_score,
                             after=M.Score(accuracy=_finite(after.accuracy), loss=_finite(after.loss)), flips=flips,
                             sample=n, flipped=len(flips))
    low, high = _proportion_interval(len(changed), len(rows), n)
    return M.PruneAnswer(n=n, skipped=chosen.skipped, before=before_score, after=_estimated_score(after, n),
                         flips=flips, exact=False, sample=len(rows), flipped=n * len(changed) / len(rows),
                         flipped_interval=M.Interval(low=n * low, high=n * high))


def _estimated_score(sampled, population: int) -> M.Score:
    """Accuracy and loss of the sampled examples, each with its 95% interval for all `population`."""
    correct = round(sampled.accuracy * len(sampled.predictions))
    low, high = _proportion_interval(correct, len(sampled.predictions), population)
    losses = np.asarray(sampled.losses, np.float64)
    loss_low, loss_high = _mean_interval(losses[np.isfinite(losses)], population)
    return M.Score(accuracy=_finite(sampled.accuracy), loss=_finite(sampled.loss),
                   accuracy_interval=M.Interval(low=low, high=high),
                   loss_interval=M.Interval(low=_finite(loss_low), high=_finite(loss_high)))


Z95 = 1.959963984540054         # the standard normal's 97.5% quantile


def _fpc(n: int, population: int) -> float:
    """Finite-population correction of a simple random sample's variance, drawn without replacement."""
    return (population - n) / (population - 1) if population > 1 else 0.0


def _proportion_interval(k: int, n: int, population: int) -> tuple[float, float]:
    """Wilson's 95% score interval of a proportion, k of n sampled, with the finite-population
    correction (n taken as n / fpc: the sample stands for more of a small population)."""
    fpc = _fpc(n, population)
    p = k / n
    if fpc <= 0:
        return p, p
    m = n / fpc
    centre = (p + Z95 ** 2 / (2 * m)) / (1 + Z95 ** 2 / m)
    half = Z95 / (1 + Z95 ** 2 / m) * math.sqrt(p * (1 - p) / m + Z95 ** 2 / (4 * m * m))
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def _mean_interval(values: np.ndarray, population: int) -> tuple[float, float]:
    """The mean ± t(0.975, n-1) · s / sqrt(n) · sqrt(fpc): a 95% interval of the population's mean."""
    n = len(values)
    if n < 2:
        return float("nan"), float("nan")
    from scipy.stats import t

    mean = float(values.mean())
    half = float(t.ppf(0.975, n - 1)) * float(values.std(ddof=1)) / math.sqrt(n) * math.sqrt(_fpc(n, population))
    return mean - half, mean + half


def _targets_of(h: RunHandle, chosen) -> list[str] | None:
    """The examples' targets for t3vis.evaluate: None where every one is a whole text scored (causal-lm)."""
    targets = [_target(t) for t in (chosen.targets or [None] * len(chosen.ids))]
    if all(t is None for t in targets):
        return None
    if any(t is None for t in targets):
        raise InvalidInputError(f"the selection of run {h.name!r} mixes examples with a completion and whole texts; "
                                "evaluate them apart")
    return typing.cast(list[str], targets)


def _prune_language_model(ctx: Context, h: RunHandle, entry, chosen, masks: dict, max_new_tokens: int,
                          baseline_key: tuple) -> M.GenerativePruneAnswer:
    import t3vis

    task, max_length = _task(h), _max_length(h)
    targets = _targets_of(h, chosen)
    masked = _model_masks(entry, masks)
    single = entry.layout                 # evaluate finds an encoder-decoder's stacks itself
    generations = None
    if len(chosen.ids) <= M.MAX_GENERATIONS:
        from t3vis.server.generative import check_positions

        check_positions(entry.model, entry.tokenizer, chosen.texts, max_new_tokens, max_length)
    with entry.lock:
        after = t3vis.evaluate(entry.model, entry.tokenizer, chosen.texts, masked_heads=masked, task=task,
                               targets=targets, max_length=max_length, layout=single)
        before = ctx.baselines.get(baseline_key)
        if before is None:
            before = t3vis.evaluate(entry.model, entry.tokenizer, chosen.texts, task=task, targets=targets,
                                    max_length=max_length, layout=single)
            ctx.baselines.put(baseline_key, before)
        if len(chosen.ids) <= M.MAX_GENERATIONS:
            generations = _generation_pairs(ctx, h, entry, chosen, targets, masked, max_new_tokens, baseline_key)
    return M.GenerativePruneAnswer(
        n=len(chosen.ids), skipped=chosen.skipped, before=_generative_score(before), after=_generative_score(after),
        masked_heads={stack: [(layer, head) for layer in sorted(heads) for head in sorted(set(heads[layer]))]
                      for stack, heads in masks.items()},
        generations=generations)


def _generative_score(result) -> M.GenerativeScore:
    return M.GenerativeScore(loss=_finite(result.loss), perplexity=_finite(result.perplexity),
                             token_accuracy=_finite(result.token_accuracy))


def _generation_pairs(ctx: Context, h: RunHandle, entry, chosen, targets, masked: dict, max_new_tokens: int,
                      baseline_key: tuple) -> list[M.GenerationPair]:
    """Greedy generations of each example before and after masking. The caller holds the model's lock."""
    import t3vis

    task, max_length = _task(h), _max_length(h)
    after = t3vis.generate(entry.model, entry.tokenizer, chosen.texts, max_new_tokens, task=task,
                           masked_heads=masked, max_length=max_length)
    key = (*baseline_key, "generate", max_new_tokens)
    before = ctx.baselines.get(key)
    if before is None:
        before = t3vis.generate(entry.model, entry.tokenizer, chosen.texts, max_new_tokens, task=task,
                                max_length=max_length)
        ctx.baselines.put(key, before)
    pairs = []
    for i, (b, a) in enumerate(zip(before, after)):
        old, new = b.token_ids.tolist(), a.token_ids.tolist()
        reference = _reference(entry, task, chosen.texts[i], None if targets is None else targets[i], max_length)
        pairs.append(M.GenerationPair(
            id=int(chosen.ids[i]), before=list(b.tokens), after=list(a.tokens),
            before_probs=[_finite(p) for p in b.probs], after_probs=[_finite(p) for p in a.probs],
            before_text=b.text, after_text=a.text,
            changed=[k >= len(old) or t != old[k] for k, t in enumerate(new)],
            reference=entry.tokenizer.convert_ids_to_tokens(reference)))
    return pairs


# -- data map --------------------------------------------------------------------------

@router.get("/runs/{run}/datamap", response_class=ArrowResponse,
            responses=_binary("Arrow IPC stream: id, confidence, variability, correctness, region, probe_row", ARROW,
                              {"X-T3vis-Rows": _header("rows", "integer")}),
            summary="the data map (training dynamics per example, Arrow)")
def datamap(run: RunName, ctx: Ctx):
    table = ctx.tables.datamap(ctx.run(run))
    return ArrowResponse(_arrow_bytes(table), headers={"X-T3vis-Rows": str(table.num_rows)})
