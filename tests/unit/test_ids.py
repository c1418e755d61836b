"""Time-sortable 64-bit ids (ids.py): unique, increasing, and carrying their node and time."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator

import pytest

from glimpse.ids import (
    EPOCH_MS,
    MAX_NODE,
    MAX_SEQUENCE,
    NODE_BITS,
    SEQUENCE_BITS,
    IdGenerator,
    NodeLeaseExpired,
    id_timestamp_ms,
    smallest_id_at,
)

T0 = EPOCH_MS + 86_400_000  # a day after the epoch


def _node_of(value: int) -> int:
    return (value >> SEQUENCE_BITS) & MAX_NODE


def _clock(readings: list[int]) -> Callable[[], int]:
    it: Iterator[int] = iter(readings)
    return lambda: next(it)


def _assert_strictly_increasing(values: list[int]) -> None:
    assert all(a < b for a, b in itertools.pairwise(values))


def test_ids_are_unique_and_increasing_across_many_calls() -> None:
    ids = IdGenerator(node=5)
    values = [ids.next_id() for _ in range(100_000)]

    _assert_strictly_increasing(values)
    assert len(set(values)) == len(values)
    assert all(0 < v < 2**63 for v in values)  # fits a signed BIGINT column


@pytest.mark.parametrize("node", [0, 1, 4242, MAX_NODE])
def test_id_embeds_the_node_that_made_it(node: int) -> None:
    ids = IdGenerator(node=node)
    assert {_node_of(ids.next_id()) for _ in range(2_000)} == {node}


@pytest.mark.parametrize("node", [-1, MAX_NODE + 1])
def test_node_outside_its_bits_is_refused(node: int) -> None:
    with pytest.raises(ValueError):
        IdGenerator(node=node)


def test_ids_from_different_nodes_in_the_same_millisecond_differ() -> None:
    a = IdGenerator(node=1, clock_ms=lambda: T0)
    b = IdGenerator(node=2, clock_ms=lambda: T0)
    assert a.next_id() != b.next_id()


def test_id_timestamp_is_the_time_it_was_made() -> None:
    ids = IdGenerator(node=3, clock_ms=lambda: T0 + 1234)
    assert id_timestamp_ms(ids.next_id()) == T0 + 1234

    before = time.time_ns() // 1_000_000
    made = IdGenerator(node=3).next_id()
    after = time.time_ns() // 1_000_000
    assert before <= id_timestamp_ms(made) <= after


def test_ids_sort_like_creation_time() -> None:
    early = IdGenerator(node=MAX_NODE, clock_ms=lambda: T0).next_id()
    late = IdGenerator(node=0, clock_ms=lambda: T0 + 1).next_id()
    assert early < late
    assert smallest_id_at(T0) <= early < smallest_id_at(T0 + 1) <= late


def test_more_ids_than_the_sequence_holds_in_one_millisecond_stay_unique_and_increasing() -> None:
    ids = IdGenerator(node=7, clock_ms=lambda: T0)  # the clock never moves
    values = [ids.next_id() for _ in range(3 * (MAX_SEQUENCE + 1) + 10)]

    _assert_strictly_increasing(values)
    assert {_node_of(v) for v in values} == {7}
    # Borrowed milliseconds are only as many as needed.
    assert id_timestamp_ms(values[-1]) - T0 == 3


def test_clock_going_backwards_still_yields_increasing_ids() -> None:
    readings = [T0 + 100, T0 + 101, T0 + 50, T0 + 50, T0 + 10, T0 + 101, T0 + 102, T0 + 3]
    ids = IdGenerator(node=9, clock_ms=_clock(readings))
    values = [ids.next_id() for _ in readings]

    _assert_strictly_increasing(values)
    assert {_node_of(v) for v in values} == {9}


def test_layout_is_41_bits_of_time_13_of_node_10_of_sequence() -> None:
    assert (NODE_BITS, SEQUENCE_BITS) == (13, 10)
    ids = IdGenerator(node=MAX_NODE, clock_ms=lambda: T0)
    first, second = ids.next_id(), ids.next_id()
    assert first >> (NODE_BITS + SEQUENCE_BITS) == T0 - EPOCH_MS
    assert second - first == 1  # the sequence is the low bits


def test_no_id_is_made_once_the_node_lease_has_run_out() -> None:
    now = [EPOCH_MS + 10_000]
    ids = IdGenerator(5, clock_ms=lambda: now[0])
    ids.hold_until(EPOCH_MS + 20_000)
    first = ids.next_id()
    now[0] = EPOCH_MS + 20_001  # suspended past the lease: the node may be someone else's
    with pytest.raises(NodeLeaseExpired):
        ids.next_id()
    ids.use_node(6)  # a fresh lease
    ids.hold_until(EPOCH_MS + 90_000)
    assert ids.next_id() > first
