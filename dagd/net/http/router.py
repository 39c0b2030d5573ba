"""The route table: a request's method and path -> the handler that answers it.

Patterns are paths of literal segments and `{name}` segments; a `{name}` captures exactly one
path segment (never a `/`). Paths are compared segment by segment after percent-decoding each
segment on its own, so `%2F` inside a segment never splits it. When several patterns match a
path, the one with a literal segment at the first place where they differ wins
(`/api/v1/runs/stats` before `/api/v1/runs/{run_id}`), and that one pattern owns the path:
if it has no route for the method, the answer is `MethodNotAllowed` (the front door answers
405 with `Allow`), whatever less literal patterns would take. No match at all is None (404).
A pattern without `{}` is found with one dictionary lookup. `GET` routes also answer `HEAD`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from dagd.net.http.message import Handler, Route


@attrs.frozen
class Found:
    """The handler for a request, and the values its pattern's `{name}` segments captured."""

    handler: Handler
    params: Mapping[str, str]


@attrs.frozen
class MethodNotAllowed:
    """The path exists, for other methods: `allow` is the `Allow` header's value
    ("GET, HEAD")."""

    allow: str


#: One segment of a pattern: a literal, or a capture (the name in `{}`).
_Segment = tuple[bool, str]  # (is_capture, text)


class Router:
    """A fixed table of routes, built once when the server starts.

    Raises ValueError at construction for a malformed pattern (not starting with `/`, a `{`
    that is not a whole segment, a name captured twice) and for a method claimed twice on
    one pattern.
    """

    def __init__(self, routes: Iterable[Route]) -> None:
        #: Patterns without captures: segments -> method -> handler.
        self._exact: dict[tuple[str, ...], dict[str, Handler]] = {}
        #: Patterns with captures, most literal first (see the module docstring).
        self._patterns: list[tuple[tuple[_Segment, ...], dict[str, Handler]]] = []
        by_pattern: dict[tuple[_Segment, ...], dict[str, Handler]] = {}
        for route in routes:
            segments = _parse(route.pattern)
            methods = by_pattern.setdefault(segments, {})
            for method in route.methods:
                name = method.upper()
                if name in methods:
                    raise ValueError(f"route {route.pattern!r}: {name} is claimed twice")
                methods[name] = route.handler
                if name == "GET":
                    methods.setdefault("HEAD", route.handler)
        for segments, methods in by_pattern.items():
            if any(capture for capture, _ in segments):
                self._patterns.append((segments, methods))
            else:
                self._exact[tuple(text for _, text in segments)] = methods
        self._patterns.sort(key=lambda entry: [capture for capture, _ in entry[0]])

    def match(self, method: str, segments: tuple[str, ...]) -> Found | MethodNotAllowed | None:
        """The route for `method` on a path given as its decoded segments (the path
        `/a/b` is `("a", "b")`, `/` is `("",)`)."""
        methods = self._exact.get(segments)
        params: Mapping[str, str] = {}
        if methods is None:
            for pattern, candidate in self._patterns:
                if len(pattern) == len(segments):
                    captured = _capture(pattern, segments)
                    if captured is not None:
                        methods, params = candidate, captured
                        break
            else:
                return None
        handler = methods.get(method)
        if handler is None:
            return MethodNotAllowed(", ".join(sorted(methods)))
        return Found(handler, params)


def split_path(path: str) -> tuple[str, ...]:
    """A pattern's or a raw path's segments, without the leading `/`."""
    return tuple(path[1:].split("/"))


def _parse(pattern: str) -> tuple[_Segment, ...]:
    if not pattern.startswith("/"):
        raise ValueError(f"route pattern {pattern!r} must start with '/'")
    segments: list[_Segment] = []
    names: set[str] = set()
    for text in split_path(pattern):
        if text.startswith("{") and text.endswith("}") and len(text) > 2:
            name = text[1:-1]
            if not name.isidentifier() or name in names:
                raise ValueError(f"route pattern {pattern!r}: bad or repeated {{{name}}}")
            names.add(name)
            segments.append((True, name))
        elif "{" in text or "}" in text:
            raise ValueError(f"route pattern {pattern!r}: a capture must be a whole segment")
        else:
            segments.append((False, text))
    return tuple(segments)


def _capture(pattern: tuple[_Segment, ...], segments: tuple[str, ...]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for (capture, text), segment in zip(pattern, segments, strict=True):
        if capture:
            if not segment:
                return None  # `{name}` never captures an empty segment
            params[text] = segment
        elif text != segment:
            return None
    return params
