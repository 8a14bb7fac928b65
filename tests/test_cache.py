"""The LRU of generated files and JPEGs: bounded in bytes, least recently used out first,
counted, and safe to share between the mount's worker threads."""

from __future__ import annotations

import random
import threading

from vgfs.cache import LRUCache


def test_least_recently_used_goes_first() -> None:
    """A get or a put refreshes an entry: the one neither read nor written for longest goes."""
    cache = LRUCache(30)
    for key in (1, 2, 3):
        cache.put(key, bytes(10))
    cache.get(1)  # oldest first: 2 3 1
    cache.put(4, bytes(10))  # evicts 2: 3 1 4
    assert cache.get(2) is None
    cache.put(3, b"y" * 10)  # replaced and refreshed: 1 4 3
    cache.put(5, bytes(10))  # evicts 1: 4 3 5
    assert cache.get(1) is None
    assert cache.get(3) == b"y" * 10 and cache.get(4) == cache.get(5) == bytes(10)
    assert (cache.evictions, cache.evicted_bytes, cache.bytes) == (2, 20, 30)


def test_bytes_stay_within_the_bound() -> None:
    """However the sizes mix, the held bytes never pass max_bytes, and they are the sum of
    the held items' sizes."""
    rng = random.Random(7)
    cache = LRUCache(1000)
    for _ in range(2000):
        key = rng.randrange(50)
        cache.put(key, bytes(rng.randrange(0, 400)))
        assert cache.bytes <= 1000
    held = {k: cache.get(k) for k in range(50)}
    held = {k: v for k, v in held.items() if v is not None}
    assert cache.bytes == sum(map(len, held.values()))
    assert cache.stats()["items"] == len(held)


def test_replacing_a_key_counts_its_bytes_once() -> None:
    cache = LRUCache(100)
    cache.put("a", bytes(60))
    cache.put("a", bytes(70))
    assert (cache.bytes, cache.stats()["items"], cache.evictions) == (70, 1, 0)
    assert len(cache.get("a")) == 70


def test_an_item_larger_than_the_budget_is_not_stored() -> None:
    """One huge file must not flush everything else: it is refused, the rest stays."""
    cache = LRUCache(100)
    cache.put("small", bytes(40))
    cache.put("huge", bytes(101))
    assert cache.get("huge") is None
    assert cache.get("small") == bytes(40)
    assert (cache.bytes, cache.evictions) == (40, 0)
    cache.put("exact", bytes(100))  # exactly the budget fits, evicting the rest
    assert cache.get("exact") == bytes(100) and cache.get("small") is None
    assert (cache.bytes, cache.evictions, cache.evicted_bytes) == (100, 1, 40)


def test_an_oversize_put_does_not_leave_the_old_value() -> None:
    """A put that is refused for size must not let a get return what the key held before."""
    cache = LRUCache(100)
    cache.put("k", b"old")
    cache.put("k", bytes(200))
    assert cache.get("k") is None
    assert cache.bytes == 0


def test_size_argument_counts_any_value() -> None:
    """Values without a len() (or whose len() is not their cost) are counted as told."""
    cache = LRUCache(100)
    value = object()
    cache.put("obj", value, size=60)
    assert cache.get("obj") is value and cache.bytes == 60
    cache.put("other", [1, 2, 3], size=50)  # 110 > 100: the older one goes
    assert cache.get("obj") is None and cache.bytes == 50
    cache.put("free", b"x" * 1000, size=0)  # counted as told, not by len()
    assert cache.get("free") is not None and cache.bytes == 50
    cache.put("big", b"", size=101)
    assert cache.get("big") is None


def test_counters() -> None:
    """hits, misses, evictions and evicted bytes feed `vgfs stats`."""
    cache = LRUCache(25)
    assert cache.stats() == {"hits": 0, "misses": 0, "evictions": 0, "evicted_bytes": 0,
                             "bytes": 0, "items": 0, "max_bytes": 25}
    cache.get("a")
    cache.put("a", bytes(10))
    cache.get("a")
    cache.get("a")
    cache.put("b", bytes(10))
    cache.put("c", bytes(12))  # evicts a (10 bytes), then the rest fits
    assert cache.stats() == {"hits": 2, "misses": 1, "evictions": 1, "evicted_bytes": 10,
                             "bytes": 22, "items": 2, "max_bytes": 25}


def test_get_or_make_makes_once_while_held() -> None:
    cache = LRUCache(100)
    made: list[str] = []

    def make(key: str, size: int):
        def build() -> bytes:
            made.append(key)
            return key.encode() * size
        return build

    assert cache.get_or_make("a", make("a", 10)) == b"a" * 10
    assert cache.get_or_make("a", make("a", 10)) == b"a" * 10
    assert made == ["a"] and (cache.hits, cache.misses) == (1, 1)
    assert cache.get_or_make("", make("", 5)) == b""  # empty bytes are a value, kept
    assert cache.get_or_make("", make("", 5)) == b"" and made == ["a", ""]
    # Too large to keep: returned every time, made every time, never stored.
    assert cache.get_or_make("z", make("z", 500)) == b"z" * 500
    assert cache.get_or_make("z", make("z", 500)) == b"z" * 500
    assert made == ["a", "", "z", "z"] and cache.bytes == 10


def test_threads_sharing_a_cache_keep_it_consistent() -> None:
    """The mount's worker threads put and get at once: no lost update of the byte count, no
    item beyond the bound, every get one of the values put for that key."""
    cache = LRUCache(5000)
    gets = 0
    lock = threading.Lock()
    errors: list[str] = []

    def work(seed: int) -> None:
        nonlocal gets
        rng = random.Random(seed)
        n = 0
        for _ in range(3000):
            key = rng.randrange(100)
            if rng.random() < 0.5:
                cache.put(key, bytes([key]) * rng.randrange(1, 300))
            else:
                n += 1
                value = cache.get(key)
                if value is not None and set(value) != {key}:
                    errors.append(f"key {key} held another key's bytes")
        with lock:
            gets += n

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cache.hits + cache.misses == gets
    before = cache.stats()
    held = [v for v in (cache.get(k) for k in range(100)) if v is not None]
    assert before["bytes"] == sum(map(len, held)) <= 5000
    assert before["items"] == len(held)


def test_frames_and_made_files_share_one_cache_without_mixing() -> None:
    """The mount keeps decompressed frames, keyed (file number, frame number), and made files,
    keyed by inode, in one LRU: a frame's key never finds a file's bytes, nor the other way
    round, and one bound holds for both."""
    cache = LRUCache(100)
    cache.put((0, 1), b"frame 0/1")
    cache.put(1, b"inode 1")
    cache.put((1, 0), b"frame 1/0")
    assert cache.get((0, 1)) == b"frame 0/1" and cache.get(1) == b"inode 1"
    assert cache.get((1, 0)) == b"frame 1/0" and cache.get(0) is None
    assert cache.get((1,)) is None and cache.get((0, 1, 0)) is None
    cache.put((2, 0), bytes(90))  # evicts the oldest of either kind
    assert cache.bytes <= 100 and cache.get((0, 1)) is None and cache.get(1) is None
