"""A rank's shard of a distributed snapshot on its way to rank 0 (record/recorder.py drives it).

A rank that sees rank 0's staging folder (`sees_stage`: it reads the marker rank 0 wrote there)
writes its shard's per-example files into it, and rank 0 moves them into the checkpoint's files
(`move_rows`). A rank that does not (another host, no shared disk) keeps its files in a folder of
its own and, when rank 0 asks, sends them a chunk of rows at a time (`send`); rank 0 writes each
chunk into place as it arrives (`receive`), so it never holds more than a chunk.
"""

from __future__ import annotations

from t3vis.record import distributed as dist_utils
from t3vis.record.probe import ProbeResult, StackSinks
from t3vis.store.rows import RaggedRows, RowFile, RowSink
from t3vis.store.writer import CheckpointStage

MARKER = "visible-to-every-rank"    # in the staging folder: a rank that reads rank 0's token there sees it


def sees_stage(stage: CheckpointStage, token: str) -> bool:
    """Whether this rank sees rank 0's staging folder: the marker rank 0 wrote there holds token."""
    try:
        return (stage.path / stage.scratch(MARKER)).read_text() == token
    except OSError:
        return False


def send(result: ProbeResult) -> None:
    """This rank's per-example files to rank 0 (receive), a chunk of rows at a time; then
    None, or the error that stopped it."""
    try:
        for name, record in result.stacks.items():
            for kind in ("hidden", "gate_grads"):
                sink = getattr(record, kind)
                if isinstance(sink, RowFile):
                    for block, first, data in sink.chunks():
                        dist_utils.send_to_main(("rows", name, kind, block, first, data))
        for shard in result.tokens if isinstance(result.tokens, list) else []:
            for column in shard.dtypes:
                for data in shard.chunks(column):
                    dist_utils.send_to_main(("tokens", column, data))
    except Exception as error:  # rank 0 raises it on every rank
        dist_utils.send_to_main(error)
        return
    dist_utils.send_to_main(None)


def receive(peer: int, final: dict[str, StackSinks], part: ProbeResult, start: int,
                   shard_rows: int) -> Exception | None:
    """On rank 0: rank peer's shard (send) into final's rows start.., and its token values
    into part.tokens (copies in the staging folder), a chunk at a time; the error that stopped it
    (the peer's, or writing's: the rest is still taken, then dropped)."""
    error = None
    while (message := dist_utils.receive_from(peer)) is not None:
        if isinstance(message, Exception):
            return message
        if error is None:
            try:
                if message[0] == "rows":
                    _, stack, kind, block, first, data = message
                    getattr(final[stack], kind).write_chunk(start, shard_rows, block, first, data)
                else:
                    _, column, data = message
                    assert isinstance(part.tokens, list)
                    part.tokens[0].append(column, data)
            except Exception as e:  # the peer still sends the rest: take it, then report
                error = e
    return error


def files(result: ProbeResult) -> list[RowFile | RaggedRows]:
    """The files a probe pass wrote its per-example and per-token values into."""
    rows = [sink for record in result.stacks.values() for sink in (record.hidden, record.gate_grads)
            if isinstance(sink, RowFile)]
    return [*rows, *(result.tokens if isinstance(result.tokens, list) else [])]


def move_rows(shard: RowSink | None, final: RowSink | None, start: int) -> None:
    """A rank's scratch file into its rows of the checkpoint's file, then gone."""
    if shard is None or final is None:
        return
    assert isinstance(shard, RowFile) and isinstance(final, RowFile)
    shard.copy_into(final, start)
    shard.remove()
