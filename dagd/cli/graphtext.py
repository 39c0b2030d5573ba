"""A DAG's steps and dependencies drawn as text: for a terminal (`dagd graph`), and as Mermaid
or Graphviz DOT source for other tools (`dagd graph --format mermaid|dot`).

The terminal drawing is layered: steps grouped by level (0 for a step without upstreams, else
one more than its deepest upstream: `dagd.core.detail.step_levels`, which numbers the
protocol's `dag` answer too), each with its upstreams listed. It stays readable for DAGs of
any width, in a pipe as on a terminal, where a box-and-line layout would have to be cropped
or wrapped.

Mermaid and DOT name nodes `s0`, `s1`, ... in the DAG's file order and carry each step id as an
escaped label, so no step id (or a hand-built one with quotes, backslashes, spaces, `#`, `<`,
newlines or any Unicode) can break the syntax or collide with a keyword such as Mermaid's `end`.
"""

from __future__ import annotations

from collections.abc import Mapping

from dagd.core.model import DagSpec, StepSpec, TriggerRule
from dagd.core.text import one_line

#: The formats of `dagd graph --format`.
FORMATS = ("text", "mermaid", "dot")

#: Beyond this many characters, step ids no longer widen the text drawing's id column.
_MAX_ID_COLUMN = 40


def render(dag: DagSpec, fmt: str) -> str:
    """`dag` in the format `fmt` (one of FORMATS), ending with a newline. Raises ValueError
    for another format."""
    if fmt == "text":
        return text_graph(dag)
    if fmt == "mermaid":
        return mermaid_graph(dag)
    if fmt == "dot":
        return dot_graph(dag)
    raise ValueError(f"unknown graph format {fmt!r} (formats: {', '.join(FORMATS)})")


def _rule(step: StepSpec) -> str | None:
    """The step's trigger rule when it is not the default (all upstreams succeeded)."""
    rule = step.trigger_rule
    return None if rule is TriggerRule.ALL_SUCCESS else str(rule)


def text_graph(dag: DagSpec) -> str:
    """The layered drawing: a title line, then one line per step, grouped by level, in the
    DAG file's order within a level, each step followed by `<- ` and its upstreams, and its
    trigger rule in brackets when it is not all_success; then the lifecycle handlers, apart.
    Ids are shown with control characters escaped."""
    # Imported here: dagd.core.detail brings the protocol's answer classes (~45 ms) to every
    # dagd start and shell Tab otherwise.
    from dagd.core.detail import step_levels

    level_of = step_levels(dag)
    by_level: dict[int, list[str]] = {}
    for step_id in dag.steps:  # file order within each level
        by_level.setdefault(level_of[step_id], []).append(step_id)
    count = len(dag.steps)
    title = one_line(dag.id) + (f": {one_line(dag.description)}" if dag.description else "")
    lines = [
        title,
        f"{count} step{'' if count == 1 else 's'} in {len(by_level)} "
        f"level{'' if len(by_level) == 1 else 's'}; '<-' lists a step's upstreams",
        "",
    ]
    width = min(max((len(one_line(s)) for s in dag.steps), default=0), _MAX_ID_COLUMN)
    label_width = len(f"level {max(by_level, default=0)}")
    for level in sorted(by_level):
        label = f"level {level}"
        for step_id in by_level[level]:
            step = dag.steps[step_id]
            name = one_line(step_id)
            line = f"{label:<{label_width}}  {name:<{width}}"
            if step.depends_on:
                line += "  <- " + ", ".join(one_line(u) for u in step.depends_on)
            if (rule := _rule(step)) is not None:
                line += f"  [{rule}]"
            lines.append(line.rstrip())
            label = ""
    if dag.handlers:
        # Outside the graph: they run once every step is final, in this order.
        lines += ["", "handlers (after every step is final, one at a time):"]
        lines += [f"  {sid}" for sid in dag.handlers]
    return "\n".join(lines) + "\n"


def _node_names(dag: DagSpec) -> Mapping[str, str]:
    return {step_id: f"s{i}" for i, step_id in enumerate(dag.steps)}


def mermaid_graph(dag: DagSpec) -> str:
    """A Mermaid flowchart (left to right): one node per step labelled with its id, one arrow
    per dependency (upstream --> downstream); the arrows into a step whose trigger rule is
    not all_success are dotted and labelled with the rule. Paste into Markdown as a
    ```mermaid block."""
    names = _node_names(dag)
    lines = [f"%% dagd DAG {one_line(dag.id)}", "flowchart LR"]
    lines += [f'    {names[s]}["{mermaid_text(s)}"]' for s in dag.steps]
    for step_id, step in dag.steps.items():
        rule = _rule(step)
        arrow = "-->" if rule is None else f"-. {rule} .->"
        lines += [f"    {names[u]} {arrow} {names[step_id]}" for u in step.depends_on if u in names]
    return "\n".join(lines) + "\n"


def mermaid_text(text: str) -> str:
    """`text` for a double-quoted Mermaid label: `#`, `"`, `&`, `<`, `>` and a backtick as
    Mermaid's entity codes (`#35;`, `#quot;`, `#amp;`, `#lt;`, `#gt;`, `#96;`, so neither the
    flowchart parser, nor the HTML label, nor Markdown strings see them as syntax), control
    characters escaped, on one line."""
    out = one_line(text).replace("#", "#35;")
    codes = (('"', "#quot;"), ("&", "#amp;"), ("<", "#lt;"), (">", "#gt;"), ("`", "#96;"))
    for char, code in codes:
        out = out.replace(char, code)
    return out


def dot_graph(dag: DagSpec) -> str:
    """Graphviz DOT source (a `digraph`, left to right): one box per step labelled with its
    id, one edge per dependency; the edges into a step whose trigger rule is not all_success
    are dashed and labelled with the rule. Render with e.g. `dot -Tsvg`."""
    names = _node_names(dag)
    lines = [
        f"digraph {dot_string(dag.id)} {{",
        "    rankdir=LR;",
        "    node [shape=box];",
    ]
    lines += [f"    {names[s]} [label={dot_string(s)}];" for s in dag.steps]
    for step_id, step in dag.steps.items():
        rule = _rule(step)
        style = "" if rule is None else f' [style=dashed, label="{rule}"]'
        lines += [
            f"    {names[u]} -> {names[step_id]}{style};" for u in step.depends_on if u in names
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def dot_string(text: str) -> str:
    """`text` as a DOT double-quoted string that Graphviz shows as written: backslashes
    doubled (Graphviz reads `\\n`, `\\l`, `\\N` in labels as escapes), `&` as `&amp;`
    (Graphviz decodes HTML entities such as `&lt;` in labels), `"` escaped, control characters
    (newlines too) escaped as text."""
    out = one_line(text).replace("\\", "\\\\").replace("&", "&amp;")
    return '"' + out.replace('"', '\\"') + '"'
