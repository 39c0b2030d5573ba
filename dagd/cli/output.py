"""How `dagd` commands print: `--json` documents in the protocol module's shapes, and text.

With `--json` a command prints exactly one JSON document on stdout and nothing else there;
messages for people go to stderr.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from dagd.core.protocol.converter import converter
from dagd.core.protocol.wire import dumps

json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document (the protocol's shapes, docs/protocol.md) and nothing else.",
)


def print_json(value: Any) -> None:
    """Write `value` (a protocol class, an attrs record, or plain JSON-able data) to stdout as
    one JSON document and a newline, unstructured by the protocol's converter."""
    sys.stdout.write(dumps(converter.unstructure(value)) + "\n")
    sys.stdout.flush()
