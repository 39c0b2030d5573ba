"""Shell completion of DAG ids, run ids and step ids, for click's completion (`shell_complete=`
on an argument; the shell side is click's: `eval "$(_DAGD_COMPLETE=bash_source dagd)"`).

They run on every Tab, so they are cheap and quiet: DAG ids come from the file names and `id`
keys of the DAG folder's TOML files (no DAG is validated and no `call` imported); run and step
ids from the daemon's SQLite history, opened read-only (no network, no daemon needed, nothing
written). Whatever cannot be read completes to nothing; a completion never fails.

The folder and the history are the config's: `--config` or `--dags` typed before the
argument, else what every command finds (`DAGD_CONFIG`, ./config.toml, the user's config).
"""

from __future__ import annotations

import sqlite3
import tomllib
from pathlib import Path

import click
from click.shell_completion import CompletionItem

from dagd.cli.options import load_config
from dagd.core.config import Config

#: At most this many run ids are offered (the newest first).
MAX_RUN_IDS = 200


def _config(ctx: click.Context) -> Config | None:
    try:
        return load_config(ctx.params.get("config_path"))
    except click.ClickException:
        return None


def _dag_folder(ctx: click.Context) -> Path | None:
    dags_dir = ctx.params.get("dags_dir")
    if isinstance(dags_dir, Path):
        return dags_dir
    config = _config(ctx)
    return config.dags_dir if config is not None else None


def complete_dag_ids(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """The DAG ids of the DAG folder that start with `incomplete`, sorted, each with its
    description as help: a file's `id` key, else its file name without `.toml`."""
    folder = _dag_folder(ctx)
    if folder is None:
        return []
    try:
        paths = sorted(folder.glob("*.toml"))
    except OSError:
        return []
    found: dict[str, str] = {}
    for path in paths:
        dag_id, description = path.stem, ""
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # unreadable or broken: the file name still names it
            doc = {}
        if isinstance(doc.get("id"), str):
            dag_id = doc["id"]
        if isinstance(doc.get("description"), str):
            description = doc["description"]
        if dag_id.startswith(incomplete):
            found.setdefault(dag_id, description)
    return [CompletionItem(d, help=found[d] or None) for d in sorted(found)]


def _history(ctx: click.Context, sql: str, args: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Rows of `sql` on the config's SQLite history, opened read-only; [] when there is no
    history or it cannot be read."""
    config = _config(ctx)
    if config is None or not config.db_path.is_file():
        return []
    try:
        conn = sqlite3.connect(f"{config.db_path.as_uri()}?mode=ro", uri=True, timeout=1)
        try:
            return [tuple(map(str, row)) for row in conn.execute(sql, args)]
        finally:
            conn.close()
    except sqlite3.Error:
        return []


def _like_prefix(text: str) -> str:
    """A LIKE pattern (ESCAPE '\\') matching what starts with `text`."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def complete_run_ids(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Run ids of the history that start with `incomplete`, newest first (at most
    MAX_RUN_IDS), each with its DAG and status as help."""
    rows = _history(
        ctx,
        "SELECT run_id, dag_id, status FROM runs WHERE run_id LIKE ? ESCAPE '\\' "
        f"ORDER BY queued_at DESC LIMIT {MAX_RUN_IDS}",
        (_like_prefix(incomplete),),
    )
    return [CompletionItem(run_id, help=f"{dag_id} {status}") for run_id, dag_id, status in rows]


def complete_step_ids(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """The step ids of the run given as `run_id` before this argument that start with
    `incomplete`, each with its status as help; nothing without a run id."""
    run_id = ctx.params.get("run_id")
    if not isinstance(run_id, str):
        return []
    rows = _history(
        ctx,
        "SELECT step_id, status FROM steps WHERE run_id = ? AND step_id LIKE ? ESCAPE '\\' "
        "ORDER BY step_id",
        (run_id, _like_prefix(incomplete)),
    )
    return [CompletionItem(step_id, help=status) for step_id, status in rows]
