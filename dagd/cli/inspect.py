"""`dagd show` and `dagd graph`: what a run did and what a DAG is.

`dagd show RUN_ID` and `dagd show --dag DAG_ID` ask the running daemon (the protocol's
`get_run` and `get_dag`); `dagd graph DAG_ID` reads the DAG folder itself, as `dagd list`
does, so it works without a daemon.
"""

from __future__ import annotations

from pathlib import Path

import click

from dagd.cli.completion import complete_dag_ids
from dagd.cli.graphtext import FORMATS, render
from dagd.cli.options import config_option, dags_option, load_config
from dagd.core.model import DagSpec
from dagd.daemon.dagfolder import load_dag_folder


def local_dag(config_path: Path | None, dags_dir: Path | None, dag_id: str) -> DagSpec:
    """`dag_id` as the DAG folder (from `--dags`, else the config's) defines it now. Raises
    click.ClickException naming the file's problems when its file is broken, or the closest
    known ids when there is no such DAG."""
    folder_path = dags_dir if dags_dir is not None else load_config(config_path).dags_dir
    folder = load_dag_folder(folder_path)
    dag = folder.dags.get(dag_id)
    if dag is not None:
        return dag
    bad = folder.problems.get(str(folder_path / f"{dag_id}.toml"))
    if bad:
        raise click.ClickException("\n".join(map(str, bad)))
    from dagd.cli.remote import unknown_dag

    raise unknown_dag(dag_id, folder.dags, str(folder_path))


@click.command()
@click.argument("dag_id", shell_complete=complete_dag_ids)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="text: steps by level with their upstreams; mermaid or dot: source for those tools.",
)
@config_option
@dags_option
def graph(dag_id: str, fmt: str, config_path: Path | None, dags_dir: Path | None) -> None:
    """Draw DAG_ID's steps and dependencies, read from the DAG folder (no daemon needed).

    \b
    Examples:
      dagd graph etl                         steps by level, each with its upstreams
      dagd graph etl --format mermaid        a Mermaid flowchart for Markdown
      dagd graph etl --format dot | dot -Tsvg > etl.svg
    """
    click.echo(render(local_dag(config_path, dags_dir, dag_id), fmt), nl=False)


#: The commands of this module, added to the `dagd` group by dagd/cli/main.py.
COMMANDS: list[click.Command] = [graph]
