"""`dagd show` and `dagd graph`: what a run did and what a DAG is, from the running daemon."""

from __future__ import annotations

import click

#: The commands of this module, added to the `dagd` group by dagd/cli/main.py.
COMMANDS: list[click.Command] = []
