"""Graph helpers over `{step_id: upstream ids}`: topological order and cycles shown as paths."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping


def topological_order(deps: Mapping[str, Iterable[str]]) -> tuple[str, ...] | None:
    """Kahn's algorithm, stable with respect to the mapping's order; None if there is a cycle.

    Dependencies on names missing from `deps` are ignored (validation reports those).
    """
    indegree = {node: 0 for node in deps}
    downstream: dict[str, list[str]] = {node: [] for node in deps}
    for node, ups in deps.items():
        for up in set(ups):
            if up in indegree:
                indegree[node] += 1
                downstream[up].append(node)
    ready = deque(node for node, n in indegree.items() if n == 0)
    order: list[str] = []
    while ready:
        node = ready.popleft()
        order.append(node)
        for down in downstream[node]:
            indegree[down] -= 1
            if indegree[down] == 0:
                ready.append(down)
    return tuple(order) if len(order) == len(indegree) else None


def find_cycle(deps: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle as a closed path `[a, b, c, a]` (a depends on b ...), or None.

    Iterative depth-first search, so a 10,000-step chain does not hit the recursion limit.
    """
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(deps, white)
    for root in deps:
        if color[root] != white:
            continue
        stack: list[tuple[str, Iterable[str]]] = [(root, iter(deps[root]))]
        path = [root]
        color[root] = grey
        while stack:
            node, children = stack[-1]
            for child in children:
                if child not in color:
                    continue
                if color[child] == grey:
                    return [*path[path.index(child) :], child]
                if color[child] == white:
                    color[child] = grey
                    stack.append((child, iter(deps[child])))
                    path.append(child)
                    break
            else:
                color[node] = black
                stack.pop()
                path.pop()
    return None
