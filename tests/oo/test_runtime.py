"""A long-running process exempts its start-up heap from the cyclic collector, and still
collects the garbage it makes afterwards."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from oo.runtime import freeze_startup_heap


@pytest.fixture
def thawed() -> Iterator[None]:
    yield
    gc.unfreeze()  # the test process goes on as before


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_the_start_up_heap_is_frozen_and_later_cycles_are_still_collected(thawed: None) -> None:
    kept = Node()
    frozen = freeze_startup_heap()
    assert frozen > 0  # (a frozen object that dies is still freed: the count only goes down after)
    assert not any(o is kept for o in gc.get_objects())  # out of the collector's sight
    later = Node()
    alive = weakref.ref(later)
    del later
    gc.collect()
    assert alive() is None
