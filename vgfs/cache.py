"""A byte-bounded LRU of generated files, with hit, miss and eviction counters."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class LRUCache:
    """Maps a key to bytes (or to any value whose size the caller gives), evicting least
    recently used entries beyond `max_bytes`.

    An item larger than the whole budget is returned but never stored, so one huge file cannot
    flush everything else. Thread-safe: the Python API may be used from many threads.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = self.misses = self.evictions = self.evicted_bytes = 0
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Any, data: Any, size: int | None = None) -> None:
        """Keep `data`, counted as `size` bytes (its len() by default)."""
        size = len(data) if size is None else size
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            if size > self.max_bytes:  # not kept; nor is what the key held before
                return
            self._items[key] = (data, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self.bytes -= dropped
                self.evictions += 1
                self.evicted_bytes += dropped

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
