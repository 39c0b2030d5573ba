"""Operating a DAG on the running daemon: `dagd pause`, `dagd unpause`, `dagd backfill`, and
`dagd schema` (the DAG file format as JSON Schema)."""

from __future__ import annotations

import click

#: The commands of this module, added to the `dagd` group by dagd/cli/main.py.
COMMANDS: list[click.Command] = []
