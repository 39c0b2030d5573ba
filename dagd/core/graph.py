"""Graph helpers over `{step_id: upstream ids}`: topological order and cycles shown as paths.

Both are the standard library's `graphlib.TopologicalSorter`, fed so that its results are
stable: every node is added first in the mapping's order (so roots, and ties within each wave,
keep the DAG file's order), and names missing from the mapping are left out (validation
reports them). Both are iterative, so a 20,000-step chain is no problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from graphlib import CycleError, TopologicalSorter


def _sorter(deps: Mapping[str, Iterable[str]], *, upstream_first: bool) -> TopologicalSorter[str]:
    """A sorter over the known nodes of `deps`, in the mapping's order. With `upstream_first`
    each node comes after its upstreams; without, the edges point the other way (each node
    before its upstreams), which makes a cycle search follow `depends_on`."""
    sorter: TopologicalSorter[str] = TopologicalSorter()
    for node in deps:
        sorter.add(node)
    for node, ups in deps.items():
        for up in ups:
            if up in deps:
                if upstream_first:
                    sorter.add(node, up)
                else:
                    sorter.add(up, node)
    return sorter


def topological_order(deps: Mapping[str, Iterable[str]]) -> tuple[str, ...] | None:
    """Every node after its upstreams, wave by wave, each wave in the mapping's order (the
    roots first); None if there is a cycle. Dependencies on names missing from `deps` are
    ignored, and a repeated upstream counts once."""
    try:
        return tuple(_sorter(deps, upstream_first=True).static_order())
    except CycleError:
        return None


def find_cycle(deps: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle as a closed path `[a, b, c, a]` (a depends on b, b on c, c on a), or None.

    The first cycle a depth-first search along `depends_on` meets, starting from the nodes
    in the mapping's order: `graphlib.CycleError` carries it (its second argument).
    """
    try:
        _sorter(deps, upstream_first=False).prepare()
    except CycleError as exc:
        cycle: list[str] = list(exc.args[1])
        return cycle
    return None
