"""Text and names in a step's life: `$VAR` expansion in `env` (real shell steps, their real
environment), and control characters kept out of a failed attempt's error text."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio

from dagd.core.model import StepSpec
from dagd.core.spec import parse_dag
from dagd.core.text import env_syntax_problem, expand_env, printable
from dagd.runtime.executor import StepContext
from dagd.runtime.local.environment import step_environment
from dagd.runtime.local.executor import LocalExecutor

LS_DIR = str(Path(shutil.which("ls") or "/bin/ls").parent)


def ctx(**params: str) -> StepContext:
    return StepContext("d", "r1", "a", 1, params)


def dag_step(text: str) -> StepSpec:
    return parse_dag(text, "dags/x.toml", "x").steps["a"]


# ------------------------------------------------------------------------- env expansion


async def test_ls_is_found_through_a_path_extended_in_env(tmp_path: Path) -> None:
    # dagd's own PATH holds only `ls`'s folder; the DAG puts a tools folder in front of it.
    # Passed literally ("/opt/tools:$PATH") it would find nothing: ls "not found".
    step = dag_step(
        f'[env]\nPATH = "{tmp_path}/tools:$PATH"\n[steps.a]\ncommand = "ls / > {tmp_path}/out"\n'
    )
    executor = LocalExecutor(base_env={"PATH": LS_DIR})
    result = await executor.run(step, ctx())
    assert result.ok, result.error
    assert "tmp" in (tmp_path / "out").read_text().split()


async def test_a_step_extends_the_dags_path_again_and_sees_earlier_entries(
    tmp_path: Path,
) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "hello-tool").write_text("#!/bin/sh\necho hello from the tool\n")
    (tools / "hello-tool").chmod(0o755)
    step = dag_step(
        f"""
        [env]
        TOOLS = "{tools}"
        PATH = "/nowhere:$PATH"
        [steps.a]
        command = 'hello-tool > "$OUT"; echo "$PRICE|$LITERAL|$KEEP|$PARAM|$HOME2" >> "$OUT"'
        [steps.a.env]
        PATH = "${{TOOLS}}:$PATH"
        OUT = "{tmp_path}/out"
        PRICE = "$$5"
        LITERAL = "$1 $"
        KEEP = "$HOME"
        PARAM = "x$DAGD_PARAM_DAY"
        HOME2 = "${{HOME}}/2"
        """.replace("\n        ", "\n")
    )
    executor = LocalExecutor(base_env={"PATH": LS_DIR, "HOME": "/home/u"})
    result = await executor.run(step, ctx(day="monday"))
    assert result.ok, result.error
    hello, values = (tmp_path / "out").read_text().splitlines()
    assert hello == "hello from the tool"
    # $$ is one $; `$1` and a lone `$` stay; params never expand into env (only DAGD_PARAM_*).
    assert values == "$5|$1 $|/home/u|x|/home/u/2"
    env = step_environment(step, ctx(day="monday"), {"PATH": LS_DIR, "HOME": "/home/u"})
    assert env["PATH"] == f"{tools}:/nowhere:{LS_DIR}"  # the step's entry saw the DAG's
    assert env["DAGD_PARAM_DAY"] == "monday"


def test_expansion_is_one_pass_and_unset_names_are_empty() -> None:
    lookup = {"A": "$B", "B": "b", "E": ""}
    assert expand_env("$A|${B}|$C|${E}x|$$A|$$$A|a$", lookup) == "$B|b||x|$A|$$B|a$"
    assert expand_env("no dollars", {}) == "no dollars"


@pytest.mark.parametrize(
    ("value", "bad_at"),
    [("${X", 1), ("ab${", 3), ("${1}", 1), ("$${X} ${Y", 7), ("${X-y}", 1), ("$$$${X}${", 8)],
)
def test_env_syntax_problem_points_at_the_bad_brace(value: str, bad_at: int) -> None:
    problem = env_syntax_problem(value)
    assert problem is not None and f"at character {bad_at} " in problem


def test_the_dag_file_check_refuses_an_unclosed_brace() -> None:
    from dagd.core.spec import DagSpecError

    with pytest.raises(DagSpecError, match=r"step 'a': field 'env': value of 'P': '\$\{' at"):
        dag_step('[steps.a]\ncommand = "ls"\nenv = { P = "${PATH:/x" }\n')


# ---------------------------------------------------------- control characters in errors


def test_printable_escapes_controls_but_keeps_tab_newline_and_text() -> None:
    assert printable("ok\ttab\nnl é ü 中 🙂") == "ok\ttab\nnl é ü 中 🙂"
    assert printable("a\x00b\x1b[31mc\rd\x7f\x85\x08") == "a\\x00b\\x1b[31mc\\x0dd\\x7f\\x85\\x08"
    assert printable("\ud800|\udcff") == "\\ud800|\\udcff"


async def test_nul_and_esc_from_stderr_are_escaped_in_the_error(tmp_path: Path) -> None:
    step = StepSpec("a", command=r"printf 'bad\000 \033[2J\033[31mred\007\n' >&2; exit 3")
    result = await LocalExecutor(log_dir=tmp_path).run(step, ctx())
    assert result.error == "exit code 3: bad\\x00 \\x1b[2J\\x1b[31mred\\x07"


async def test_invalid_utf8_and_c1_controls_from_stderr(tmp_path: Path) -> None:
    step = StepSpec("a", command=r"printf '\302\233 31m \377\n' >&2; exit 1")
    result = await LocalExecutor(log_dir=tmp_path).run(step, ctx())
    assert result.error == "exit code 1: \\x9b 31m \ufffd"


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


def raise_control_characters(ctx: StepContext) -> None:
    raise ValueError("line one\x00\x1b]0;title\x07\nline two \ud800")


async def async_raise_unprintable(ctx: StepContext) -> None:
    raise _Unprintable()


async def test_a_python_steps_exception_text_is_escaped() -> None:
    limiter = trio.CapacityLimiter(2)
    executor = LocalExecutor(sync_limiter=limiter)
    result = await executor.run(StepSpec("a", call=f"{__name__}:raise_control_characters"), ctx())
    assert result.error == "ValueError: line one\\x00\\x1b]0;title\\x07\nline two \\ud800"
    assert result.error is not None
    result.error.encode("utf-8")  # storable: no lone surrogate left
    result = await executor.run(StepSpec("a", call=f"{__name__}:async_raise_unprintable"), ctx())
    assert result.error == "_Unprintable: <_Unprintable whose message cannot be shown>"
