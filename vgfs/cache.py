"""A byte-bounded LRU of generated files, with hit, miss and eviction counters."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class LRUCache:
    """Maps a key to bytes, evicting least recently used entries beyond `max_bytes`.

    An item larger than the whole budget is returned but never stored, so one huge file cannot
    flush everything else. Thread-safe: the Python API may be used from many threads.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = self.misses = self.evictions = self.evicted_bytes = 0
        self._items: OrderedDict[Any, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return data

    def put(self, key: Any, data: bytes) -> None:
        size = len(data)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= len(old)
            self._items[key] = data
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self.bytes -= len(dropped)
                self.evictions += 1
                self.evicted_bytes += len(dropped)

    def get_or_make(self, key: Any, make: Callable[[], bytes]) -> bytes:
        """The cached bytes, or make them, keep them and return them."""
        data = self.get(key)
        if data is None:
            data = make()
            self.put(key, data)
        return data

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "evicted_bytes": self.evicted_bytes, "bytes": self.bytes,
                "items": len(self._items), "max_bytes": self.max_bytes}
