"""Group commit: callers that arrive together share one write; each gets its own result."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from workers.group_commit import GroupCommit


def test_alone_a_write_is_the_single_write() -> None:
    many: list[list[int]] = []
    gc = GroupCommit(lambda x: x * 10, lambda xs: many.append(list(xs)) or [x * 10 for x in xs])
    assert gc.submit(3) == 30
    assert many == [] and gc.sizes == [1]


def test_callers_arriving_during_a_write_share_the_next_one() -> None:
    gate = threading.Event()
    batches: list[list[int]] = []

    def one(x: int) -> int:
        gate.wait(5)  # the first write is in flight while the others arrive
        return x * 10

    def many(xs: list[int]) -> list[int]:
        batches.append(list(xs))
        return [x * 10 for x in xs]

    gc = GroupCommit(one, many)
    with ThreadPoolExecutor(9) as pool:
        first = pool.submit(gc.submit, 0)
        time.sleep(0.05)
        rest = [pool.submit(gc.submit, i) for i in range(1, 9)]
        time.sleep(0.1)
        gate.set()
        assert first.result(5) == 0
        assert [f.result(5) for f in rest] == [i * 10 for i in range(1, 9)]
    assert batches == [list(range(1, 9))]  # the eight queued callers: one write


def test_a_failed_batch_is_written_one_by_one_so_only_the_bad_item_fails() -> None:
    gate = threading.Event()

    def one(x: int) -> int:
        if x == 0:
            gate.wait(5)
        if x == 5:
            raise ValueError("bad item 5")
        return x

    def many(xs: list[int]) -> list[int]:
        raise RuntimeError("the batch statement failed")

    gc = GroupCommit(one, many)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(gc.submit, 0)
        time.sleep(0.05)
        rest = {i: pool.submit(gc.submit, i) for i in range(1, 8)}
        time.sleep(0.1)
        gate.set()
        assert first.result(5) == 0
        for i, fut in rest.items():
            if i == 5:
                with pytest.raises(ValueError, match="bad item 5"):
                    fut.result(5)
            else:
                assert fut.result(5) == i


def test_a_batch_is_at_most_max_items_and_the_rest_follow() -> None:
    gate = threading.Event()
    batches: list[int] = []

    def one(x: int) -> int:
        gate.wait(5)
        return x

    def many(xs: list[int]) -> list[int]:
        batches.append(len(xs))
        return list(xs)

    gc = GroupCommit(one, many, max_items=3)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(gc.submit, 0)
        time.sleep(0.05)
        rest = [pool.submit(gc.submit, i) for i in range(1, 8)]
        time.sleep(0.1)
        gate.set()
        assert [f.result(5) for f in [first, *rest]] == list(range(8))
    assert sorted(batches, reverse=True) == [3, 3] and sum(gc.sizes) == 8


def test_an_error_that_may_have_written_the_batch_is_every_callers() -> None:
    """A broken connection may have committed the batch: writing each item again could
    write it twice (an attempt charged twice), so each caller gets the error instead."""
    gate = threading.Event()
    alone: list[int] = []

    def one(x: int) -> int:
        if x == 0:
            gate.wait(5)
        else:
            alone.append(x)
        return x

    def many(xs: list[int]) -> list[int]:
        raise ConnectionError("server closed the connection during COMMIT")

    gc = GroupCommit(one, many, alone_after=lambda exc: not isinstance(exc, ConnectionError))
    with ThreadPoolExecutor(5) as pool:
        first = pool.submit(gc.submit, 0)
        time.sleep(0.05)
        rest = [pool.submit(gc.submit, i) for i in range(1, 5)]
        time.sleep(0.1)
        gate.set()
        assert first.result(5) == 0
        for fut in rest:
            with pytest.raises(ConnectionError):
                fut.result(5)
    assert alone == []


def test_with_two_writers_a_second_batch_goes_while_the_first_is_in_flight() -> None:
    """A durable write waits for the disk: a second batch need not wait out the first."""
    first_in, release = threading.Event(), threading.Event()
    sizes: list[int] = []

    def one(x: int) -> int:
        if x == 0:
            first_in.set()
            release.wait(5)
        return x

    def many(xs: list[int]) -> list[int]:
        sizes.append(len(xs))
        return list(xs)

    gc = GroupCommit(one, many, writers=2)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(gc.submit, 0)
        first_in.wait(5)
        second = pool.submit(gc.submit, 1)
        assert second.result(2) == 1  # written while the first write is still in flight
        release.set()
        assert first.result(5) == 0


def test_every_caller_gets_its_own_result_under_contention() -> None:
    def many(xs: list[int]) -> list[int]:
        time.sleep(0.002)
        return [x * 2 for x in xs]

    for writers in (1, 2):
        gc = GroupCommit(lambda x: x * 2, many, max_items=5, writers=writers)
        with ThreadPoolExecutor(48) as pool:
            assert list(pool.map(gc.submit, range(500))) == [x * 2 for x in range(500)]
        assert max(gc.sizes) <= 5
