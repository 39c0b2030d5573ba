"""The pools' fair queue (dagd/core/pools.py): slots never over the size, strict serving order
by the run's trigger order then asking order, withdrawals that take nothing."""

from __future__ import annotations

import random

import pytest

from dagd.core.pools import PoolError, PoolQueue, PoolRequest, PoolTable, PoolUsage
from dagd.core.spec import DagSpecError, parse_dag


def ask(pool: str, order: float, step: str, slots: int = 1) -> PoolRequest:
    return PoolRequest(pool, slots, order, f"run{order}", step)


def test_asks_within_the_size_are_granted_at_once_and_the_rest_wait() -> None:
    queue = PoolQueue("w", 2)
    a, b, c = ask("w", 1, "a"), ask("w", 1, "b"), ask("w", 1, "c")
    assert queue.ask(a) == [a]
    assert queue.ask(b) == [b]
    assert queue.ask(c) == []
    assert not c.granted
    assert queue.usage() == PoolUsage("w", 2, 2, 1, 1)
    assert queue.release(a) == [c]
    assert c.granted
    assert queue.usage() == PoolUsage("w", 2, 2, 0, 0)


def test_earlier_triggered_runs_are_served_first_whoever_asked_last() -> None:
    queue = PoolQueue("w", 1)
    holder = ask("w", 0, "holder")
    queue.ask(holder)
    late, early, middle = ask("w", 30, "late"), ask("w", 10, "early"), ask("w", 20, "middle")
    for request in (late, early, middle):
        assert queue.ask(request) == []
    served = []
    current = holder
    for _ in range(3):
        (current,) = queue.release(current)
        served.append(current.step_id)
    assert served == ["early", "middle", "late"]


def test_asks_of_one_run_are_served_in_asking_order() -> None:
    queue = PoolQueue("w", 1)
    first = ask("w", 5, "first")
    queue.ask(first)
    later = [ask("w", 5, f"s{i}") for i in range(5)]
    for request in later:
        queue.ask(request)
    order = []
    current = first
    for _ in later:
        (current,) = queue.release(current)
        order.append(current.step_id)
    assert order == [r.step_id for r in later]


def test_a_big_ask_at_the_head_is_not_passed_by_smaller_ones() -> None:
    queue = PoolQueue("w", 3)
    one = ask("w", 1, "one")
    queue.ask(one)
    big = ask("w", 2, "big", slots=3)
    small = ask("w", 3, "small")
    assert queue.ask(big) == []
    assert queue.ask(small) == []  # it would fit, but big is ahead of it
    assert queue.release(one) == [big]
    assert queue.release(big) == [small]


def test_a_withdrawn_ask_takes_nothing_and_lets_the_next_through() -> None:
    queue = PoolQueue("w", 2)
    held = ask("w", 1, "held")
    queue.ask(held)
    big = ask("w", 2, "big", slots=2)
    small = ask("w", 3, "small")
    queue.ask(big)
    queue.ask(small)
    assert queue.release(big) == [small]  # withdrawn: the one behind it fits now
    assert not big.granted
    assert queue.usage() == PoolUsage("w", 2, 2, 0, 0)
    assert queue.release(big) == []  # twice: nothing
    queue.release(held)
    queue.release(small)
    assert queue.usage() == PoolUsage("w", 2, 0, 0, 0)


def test_an_ask_over_the_size_is_cut_to_it() -> None:
    queue = PoolQueue("w", 2)
    huge = ask("w", 1, "huge", slots=50)
    assert queue.ask(huge) == [huge]
    assert huge.slots == 2


def test_an_unknown_pool_is_an_error_naming_the_configured_ones() -> None:
    table = PoolTable({"warehouse": 2, "gpu": 1})
    with pytest.raises(PoolError, match=r"pool 'nope' is not configured \(configured: gpu, wareh"):
        table.ask(ask("nope", 1, "s"))
    assert [u.name for u in table.usage()] == ["gpu", "warehouse"]


class CountedOrder(float):
    """A trigger order that counts how often the queue compares it."""

    compared = 0

    def __lt__(self, other: object) -> bool:
        CountedOrder.compared += 1
        return float(self) < float(other)  # type: ignore[arg-type]


def withdraw_all_comparisons(n: int) -> int:
    """Comparisons made while `n` waiting requests of a full pool are withdrawn in random
    order (a cancelled fan-out), checking what the pool says and serves on the way."""
    rng = random.Random(n)
    queue = PoolQueue("w", 2)
    holders = [ask("w", -1, "h1"), ask("w", -1, "h2")]
    for holder in holders:
        queue.ask(holder)
    waiting = [PoolRequest("w", 1, CountedOrder(rng.random()), "r", f"s{i}") for i in range(n)]
    for request in waiting:
        queue.ask(request)
    kept = waiting[: n // 100]  # these wait on
    gone = waiting[n // 100 :]
    rng.shuffle(gone)
    CountedOrder.compared = 0
    for request in gone:
        assert queue.release(request) == []
    compared = CountedOrder.compared
    assert queue.usage() == PoolUsage("w", 2, 2, len(kept), len(kept))
    first = min(kept, key=lambda r: float(r.order))
    assert queue.release(holders[0]) == [first]  # a withdrawn one is never granted
    assert queue.usage() == PoolUsage("w", 2, 2, len(kept) - 1, len(kept) - 1)
    return compared


def test_withdrawing_many_waiting_requests_costs_about_n_log_n() -> None:
    # Each withdrawal used to rebuild the heap (O(n)): 10,000 took 48 s on the event loop.
    # n log n makes the 10x larger case ~13x dearer; n^2 would make it ~100x.
    small, large = withdraw_all_comparisons(1_000), withdraw_all_comparisons(10_000)
    assert large < 25 * small, (small, large)


@pytest.mark.parametrize("seed", range(20))
def test_random_asks_and_releases_keep_every_invariant(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.randint(1, 4)
    queue = PoolQueue("w", size)
    holding: list[PoolRequest] = []
    waiting: list[PoolRequest] = []
    for i in range(300):
        roll = rng.random()
        if roll < 0.5:
            request = ask("w", rng.randint(0, 5), f"s{i}", slots=rng.randint(1, size))
            granted = queue.ask(request)
            waiting.append(request)
        else:
            pool = holding if roll < 0.8 or not waiting else waiting
            if not pool:
                continue
            request = pool.pop(rng.randrange(len(pool)))
            granted = queue.release(request)
        for request in granted:
            waiting.remove(request)
            holding.append(request)
        assert sum(r.slots for r in holding) == queue.in_use <= size
        assert queue.waiting == len(waiting)
        assert queue.waiting_slots == sum(r.slots for r in waiting)
        if waiting:  # the head of the line does not fit: nothing is granted out of order
            head = min(waiting, key=lambda r: (r.order, r.seq))
            assert queue.in_use + head.slots > size


def test_a_sub_dag_step_takes_no_pool() -> None:
    with pytest.raises(DagSpecError, match="a run step takes no pool"):
        parse_dag('[steps.a]\nrun = "child"\npool = "w"\n', "f.toml", default_id="d")
    text = '[steps.a]\ncommand = "true"\npool = "w"\npool_slots = 2\n'
    step = parse_dag(text, "f.toml", default_id="d").steps
    assert (step["a"].pool, step["a"].pool_slots) == ("w", 2)
