"""A cached kombu ``cached_property`` value is read without the property's shared lock."""

from __future__ import annotations

import threading

from kombu.utils.objects import cached_property

from queues import cached_reads


class _Thing:
    computed = 0

    @cached_property
    def value(self) -> int:
        type(self).computed += 1
        return 42


def test_a_cached_value_is_read_while_another_thread_holds_the_lock() -> None:
    cached_reads.install()
    thing = _Thing()
    assert thing.value == 42  # the first read computes it (under the lock)
    lock = _Thing.__dict__["value"].lock
    done = threading.Event()
    out: list[int] = []
    with lock:  # held here, as a thread that lost the GIL inside the lock would hold it
        t = threading.Thread(target=lambda: (out.append(thing.value), done.set()), daemon=True)
        t.start()
        assert done.wait(1.0), "the read waited for the property's lock"
    assert out == [42]


def test_compute_set_and_delete_still_behave() -> None:
    cached_reads.install()
    assert cached_reads.install() is False  # idempotent
    _Thing.computed = 0
    a, b = _Thing(), _Thing()
    assert (a.value, a.value, b.value) == (42, 42, 42)
    assert _Thing.computed == 2  # once per instance
    a.value = 7
    assert a.value == 7 and b.value == 42
    del a.value
    assert a.value == 42 and _Thing.computed == 3
    assert isinstance(_Thing.value, cached_property)  # read on the class: the descriptor
