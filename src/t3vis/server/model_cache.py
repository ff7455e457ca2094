"""Checkpoint models loaded on demand, kept in a small LRU cache, one lock each.

t3vis.evaluate and t3vis.explain add hooks (head gates, embedding taps) for the length of a
call and take them off after; two calls on one model at once would see each other's hooks.
So every use of a loaded model holds that model's lock: requests on different models run in
parallel, requests on the same model one after another. Loading happens outside the cache's
own lock (a slow load of one checkpoint never blocks a cached hit on another), and two
requests for the same missing checkpoint load it once. A failed load leaves nothing behind
(no entry, no gate): the next request for that checkpoint loads again and gets the same error.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from t3vis.server.lru import LRU


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    lock: threading.Lock = field(default_factory=threading.Lock)
    layout: object = None           # the one AttentionLayout of a single-stack model, found once; else None
    stacks: tuple = ()              # every stack's AttentionLayout (t3vis.models.structure.find_stacks)
    # a sequence's teacher-forced scoring by this model, by (text, target): each click on one of its
    # target tokens asks for the same scores again (a model forward pass each time otherwise)
    scored: LRU = field(default_factory=lambda: LRU(64))


class ModelCache:
    def __init__(self, size: int = 2):
        if size < 1:
            raise ValueError(f"the model cache holds at least one model; got {size}")
        self.size = int(size)
        self._entries: OrderedDict[tuple, LoadedModel] = OrderedDict()
        self._loading: dict[tuple, threading.Lock] = {}
        self._lock = threading.Lock()
        self.loads = 0                  # how many times a checkpoint was loaded (for tests and logs)

    def get(self, key: tuple, load) -> LoadedModel:
        """The model under key, loading it with load() -> (model, tokenizer) on a miss."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                return hit
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            try:
                return self._load_once(key, load)
            finally:                                      # loaded or failed: the gate is not kept
                with self._lock:
                    if self._loading.get(key) is gate:
                        del self._loading[key]

    def _load_once(self, key: tuple, load) -> LoadedModel:
        """Under the key's gate: the entry another request loaded meanwhile, or a fresh load.
        A failed load caches nothing, so the next request tries again and gets the same error."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                return hit
        model, tokenizer = load()
        from t3vis.models.structure import find_stacks

        stacks = find_stacks(model)
        entry = LoadedModel(model.eval(), tokenizer, layout=stacks[0] if len(stacks) == 1 else None, stacks=stacks)
        with self._lock:
            self.loads += 1
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)     # a request still using it keeps its reference
        return entry

    def loading(self) -> int:
        """Loads in flight (their gates), for tests and logs."""
        with self._lock:
            return len(self._loading)

    def keys(self) -> list[tuple]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
