"""Text from outside dagd: made safe to show, and `$VAR` expansion in `env` values.

- `printable(text)` escapes what must never reach a terminal, a log line or an `error` event
  as it is: control characters (C0 but tab and newline, DEL, C1: NUL, ESC, CR, ...) and lone
  surrogates, each as a Python-style `\\xNN` / `\\uNNNN` escape, so the text stays readable
  and says what was there.
- `expand_env(value, lookup)` reads `$NAME`, `${NAME}` and `$$` the way Dagu, docker-compose
  and systemd users expect; `env_syntax_problem(value)` says what a validator should refuse.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# C0 controls but \t (0x09) and \n (0x0a), DEL, C1 controls, and lone surrogates (which cannot
# be encoded as UTF-8: SQLite and JSON writers raise on them).
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with control characters (all but tab and newline) and lone surrogates escaped
    as `\\xNN` / `\\uNNNN`; text without any is returned as it is (no copy)."""
    if _UNPRINTABLE.search(text) is None:
        return text
    return _UNPRINTABLE.sub(_escape, text)


def one_line(text: str) -> str:
    """`printable(text)` with newlines and tabs escaped too: for messages that must stay one
    line (a problem in a DAG or config file)."""
    return printable(text).replace("\n", "\\n").replace("\t", "\\t")


def show(value: object, limit: int = 60) -> str:
    """`repr(value)` cut to about `limit` characters: how a problem quotes a wrong value."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# One `$` construct: `$$`, `${NAME}`, `$NAME`; a `$` followed by anything else is literal.
_REFERENCE = re.compile(rf"\$(?:(\$)|\{{({_NAME})\}}|({_NAME}))")
# For validation: a `${` that does not close with a name and `}`.
_BAD_BRACE = re.compile(rf"(?<!\$)(?:\$\$)*\$\{{(?!{_NAME}\}})")


def expand_env(value: str, lookup: Mapping[str, str]) -> str:
    """`value` with `$NAME` and `${NAME}` replaced by `lookup[NAME]` (the empty string when it
    is not there, as in a shell) and `$$` by one `$`. Any other `$` (before a digit, a space,
    the end) stays as it is; so does a malformed `${`, which validation refuses first
    (`env_syntax_problem`). The result is never expanded again."""
    if "$" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        if match[1]:
            return "$"
        return lookup.get(match[2] or match[3], "")

    return _REFERENCE.sub(replace, value)


def env_syntax_problem(value: str) -> str | None:
    """Why `value` cannot be expanded (a `${` without a valid name and closing `}`), or None.
    `$${` is a literal `$` followed by `{`, not a reference."""
    bad = _BAD_BRACE.search(value)
    if bad is None:
        return None
    start = bad.end() - 2
    return (
        f"'${{' at character {start + 1} needs a name and a closing '}}' "
        f"(write '$$' for a literal '$')"
    )
