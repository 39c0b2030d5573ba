"""dagd.core.graph: stable topological order and cycles shown as closed paths."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest

from dagd.core.graph import find_cycle, topological_order


def assert_is_topological(deps, order):
    assert sorted(order) == sorted(deps)
    position = {node: i for i, node in enumerate(order)}
    for node, ups in deps.items():
        for up in ups:
            if up in deps:
                assert position[up] < position[node], (up, node)


@pytest.mark.parametrize(
    ("deps", "expected"),
    [
        ({}, ()),
        ({"a": []}, ("a",)),
        ({"a": [], "b": [], "c": []}, ("a", "b", "c")),
        ({"c": [], "b": [], "a": []}, ("c", "b", "a")),
        ({"b": ["a"], "a": []}, ("a", "b")),
        # Diamond: ties keep the mapping's order.
        ({"a": [], "c": ["a"], "b": ["a"], "d": ["b", "c"]}, ("a", "c", "b", "d")),
        ({"a": [], "b": ["a"], "c": ["a"], "d": ["c", "b"]}, ("a", "b", "c", "d")),
        # Roots first (in mapping order), then each wave in mapping order.
        ({"x": [], "y": ["x"], "z": []}, ("x", "z", "y")),
        # Names that are not in the mapping are ignored (validation reports them).
        ({"a": ["ghost"], "b": ["a"]}, ("a", "b")),
        # A repeated upstream counts once.
        ({"a": [], "b": ["a", "a"]}, ("a", "b")),
    ],
)
def test_topological_order(deps, expected):
    order = topological_order(deps)
    assert order == expected
    assert_is_topological(deps, order)


@pytest.mark.parametrize(
    "deps",
    [
        {"a": ["a"]},
        {"a": ["b"], "b": ["a"]},
        {"root": [], "a": ["root", "c"], "b": ["a"], "c": ["b"], "leaf": ["c"]},
    ],
)
def test_topological_order_of_a_cycle_is_none(deps):
    assert topological_order(deps) is None


def test_topological_order_is_stable_across_calls_and_hash_seeds():
    deps = {f"n{i}": [f"n{j}" for j in range(max(0, i - 3), i) if (i * j) % 3] for i in range(60)}
    first = topological_order(deps)
    assert_is_topological(deps, first)
    assert all(topological_order(deps) == first for _ in range(5))
    # Set iteration order of strings depends on PYTHONHASHSEED; the result must not.
    code = (
        "import json, sys; from dagd.core.graph import topological_order; "
        "print(json.dumps(topological_order(json.loads(sys.stdin.read()))))"
    )
    for seed in ("1", "2", "12345"):
        proc = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(deps),
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        )
        assert tuple(json.loads(proc.stdout)) == first


def test_long_chain_has_no_recursion_problem():
    n = 20_000
    deps = {f"s{i}": [f"s{i - 1}"] if i else [] for i in reversed(range(n))}
    assert topological_order(deps) == tuple(f"s{i}" for i in range(n))
    assert find_cycle(deps) is None
    deps["s0"] = [f"s{n - 1}"]
    assert topological_order(deps) is None
    cycle = find_cycle(deps)
    assert cycle is not None and len(cycle) == n + 1 and cycle[0] == cycle[-1]


def assert_is_cycle(deps, cycle):
    """[a, b, ..., a] where each node depends on the next one."""
    assert cycle[0] == cycle[-1]
    assert len(set(cycle[:-1])) == len(cycle) - 1  # a simple cycle
    for node, up in itertools.pairwise(cycle):
        assert up in deps[node], (node, up)


@pytest.mark.parametrize(
    ("deps", "expected"),
    [
        ({"a": ["a"]}, ["a", "a"]),
        ({"a": ["b"], "b": ["a"]}, ["a", "b", "a"]),
        ({"a": ["b"], "b": ["c"], "c": ["a"]}, ["a", "b", "c", "a"]),
        # A tail leading into the cycle is not part of it.
        ({"t": ["a"], "a": ["b"], "b": ["a"]}, ["a", "b", "a"]),
        # The cycle hangs off the side of a finished DAG part.
        (
            {"a": [], "b": ["a"], "c": ["b", "e"], "d": ["c"], "e": ["d"]},
            ["c", "e", "d", "c"],
        ),
        # Two cycles: the first one reached from the mapping's order.
        ({"p": ["q"], "q": ["p"], "x": ["y"], "y": ["x"]}, ["p", "q", "p"]),
        # Unknown names are skipped, not followed.
        ({"a": ["ghost", "b"], "b": ["a"]}, ["a", "b", "a"]),
        # A figure eight: two cycles sharing a node.
        ({"m": ["l", "r"], "l": ["m"], "r": ["m"]}, ["m", "l", "m"]),
    ],
)
def test_find_cycle(deps, expected):
    cycle = find_cycle(deps)
    assert cycle == expected
    assert_is_cycle(deps, cycle)


@pytest.mark.parametrize(
    "deps",
    [
        {},
        {"a": []},
        {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]},  # diamond: shared ancestor, no cycle
        {"a": ["ghost"]},
        {"a": [], "b": ["a", "a"]},
    ],
)
def test_find_cycle_none(deps):
    assert find_cycle(deps) is None
