"""perception.replay.prefetched: the reader thread keeps order, hands its exception to the consumer
at the item where it happened, and stops when the consumer stops early."""
from __future__ import annotations

import threading

import pytest

from perception.replay import prefetched


def test_order_is_kept_beyond_the_queue_depth():
    assert list(prefetched(iter(range(1000)), depth=4)) == list(range(1000))


def test_an_exception_in_the_reader_reaches_the_consumer_after_the_items_before_it():
    def items():
        yield from range(5)
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for x in prefetched(items(), depth=2):
            got.append(x)
    assert got == [0, 1, 2, 3, 4]


def test_closing_early_stops_the_reader():
    produced = []

    def items():
        for i in range(10_000):
            produced.append(i)
            yield i

    gen = prefetched(items(), depth=3)
    assert [next(gen) for _ in range(2)] == [0, 1]
    gen.close()
    assert not any(t.name == "perception-replay-reader" for t in threading.enumerate())
    assert len(produced) < 10                  # the reader stopped a few items ahead, not at the end
