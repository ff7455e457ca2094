"""Rank awareness under torch.distributed: shard the probe set, gather small things to rank 0, pass
big things to rank 0 a message at a time, and let every rank know of an error on rank 0 (so none
waits forever for it)."""

from __future__ import annotations

import numpy as np
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def shards(n: int) -> list[np.ndarray]:
    """Every rank's contiguous block of 0..n-1, in rank order: together, 0..n-1."""
    return np.array_split(np.arange(n), world_size())


def shard(n: int) -> np.ndarray:
    """This rank's block of shards(n)."""
    return shards(n)[rank()]


def max_over_ranks(value: int) -> int:
    """The largest of every rank's value (the value itself in a single process)."""
    if not is_distributed():
        return value
    values: list = [None] * world_size()
    dist.all_gather_object(values, value)
    return max(int(v) for v in values)


def from_every_rank(value) -> list:
    """Every rank's (picklable, small) value, in rank order, on every rank ([value] in a single process)."""
    if not is_distributed():
        return [value]
    values: list = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def ask(peer: int, go: bool) -> None:
    """Rank 0 tells rank `peer`, waiting in asked(), whether to send its messages now."""
    dist.send_object_list([bool(go)], dst=peer)


def asked() -> bool:
    """A rank other than 0: wait for rank 0's ask(); whether it wants this rank's messages."""
    box: list = [None]
    dist.recv_object_list(box, src=0)
    return bool(box[0])


def send_to_main(message) -> None:
    """One picklable message from this rank to rank 0, which takes it with receive_from()."""
    dist.send_object_list([message], dst=0)


def receive_from(peer: int):
    """On rank 0: the next message rank `peer` sent with send_to_main()."""
    box: list = [None]
    dist.recv_object_list(box, src=peer)
    return box[0]


def gather_to_main(obj):
    """On rank 0: [obj of rank 0, obj of rank 1, ...]; elsewhere None. Single process: [obj]."""
    if not is_distributed():
        return [obj]
    received = [None] * world_size() if rank() == 0 else None
    dist.gather_object(obj, received, dst=0)
    return received


def on_main(fn):
    """Run fn on rank 0 only; every rank returns its result or raises its error, so a failure on
    rank 0 never leaves the other ranks waiting for it."""
    if not is_distributed():
        return fn()
    result, error = None, None
    if rank() == 0:
        try:
            result = fn()
        except Exception as e:  # re-raised below, on every rank
            error = e
    settle(error)
    return result


def share_from_main(value=None):
    """Rank 0's value on every rank (the others pass nothing). An exception as the value is
    raised on every rank instead, once all have it."""
    if not is_distributed():
        if isinstance(value, BaseException):
            raise value
        return value
    box = [value if rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    if isinstance(box[0], BaseException):
        dist.barrier()
        raise box[0]
    return box[0]


def settle(error: BaseException | None = None) -> None:
    """The end of a step rank 0 finishes alone: every rank raises rank 0's error (given on rank 0,
    None for success; the others' arguments are ignored), or returns once all know there is none."""
    if not is_distributed():
        if error is not None:
            raise error
        return
    box = [error if rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    dist.barrier()  # no rank leaves (and perhaps tears the group down) before all have the news
    if box[0] is not None:
        raise box[0]
