"""Terminal views of runs, built from the event stream alone (the same events a WebSocket client
gets), so `dagd run` and `dagd watch` show the same thing.

On a terminal: a live progress bar per run and the steps that matter right now (running,
retrying, failed), via rich. Elsewhere (pipes, CI logs): one plain line per transition.
"""

from __future__ import annotations

import functools
import time

import attrs
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from dagd.core.events import (
    DagEvent,
    DagRunProgressEvent,
    DagRunStatusEvent,
    DagStatusEvent,
    ErrorEvent,
    StepStatusEvent,
)
from dagd.core.model import BUCKET_OF, FINISHED_RUN, ProgressBucket, RunStatus, StepStatus

S = StepStatus

#: How each status looks: a rich style and a symbol. A run's statuses are a step's plus
#: `queued` (StrEnum members equal their text, so both kinds look up here).
STYLE: dict[str, str] = {
    RunStatus.QUEUED: "dim",
    S.PENDING: "dim",
    S.RUNNING: "cyan",
    S.RETRYING: "yellow",
    S.SUCCESS: "green",
    S.SKIPPED: "dim",
    S.FAILED: "bold red",
    S.UPSTREAM_FAILED: "red",
    S.CANCELLED: "magenta",
}
SYMBOL: dict[str, str] = {
    RunStatus.QUEUED: "·",
    S.PENDING: "·",
    S.RUNNING: "▶",
    S.RETRYING: "↻",
    S.SUCCESS: "✔",
    S.SKIPPED: "⤼",
    S.FAILED: "✘",
    S.UPSTREAM_FAILED: "✘",
    S.CANCELLED: "■",
}
#: Steps worth a line in the live view, and those among them shown last (still moving).
NOTEWORTHY = frozenset({S.RUNNING, S.RETRYING, S.FAILED, S.UPSTREAM_FAILED, S.CANCELLED})
MOVING = frozenset({S.RUNNING, S.RETRYING})


# Steps per progress bucket, pending left out (the total minus the rest).
BUCKET = {s: b for s, b in BUCKET_OF.items() if b is not ProgressBucket.PENDING}


@functools.lru_cache(maxsize=4)
def _clock_time(second: int) -> str:
    """HH:MM:SS of a UNIX second in local time; cached, as a run's events crowd into the same
    few seconds (`dagd run` writes thousands of lines a second)."""
    return time.strftime("%H:%M:%S", time.localtime(second))


def format_duration(ms: int | None) -> str:
    """Milliseconds as a person reads them: 1.5s, 2m05s, 1h02m ("" for None)."""
    if ms is None:
        return ""
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@attrs.define
class RunView:
    """What the terminal knows of one run, folded from its events."""

    dag_id: str
    run_id: str
    status: RunStatus = RunStatus.QUEUED
    steps: dict[str, StepStatusEvent] = attrs.field(factory=dict)
    progress: DagRunProgressEvent | None = None
    errors: list[ErrorEvent] = attrs.field(factory=list)
    started: float | None = None
    ended: float | None = None

    def counts(self) -> tuple[int, int, int, int, int]:
        """(total, completed, running, failed, pending): the total from the last progress event,
        the rest from the step events (progress events are throttled, step events are not)."""
        if self.progress is None:
            return 0, 0, 0, 0, 0
        total = self.progress.total_steps
        buckets = dict.fromkeys(
            (ProgressBucket.COMPLETED, ProgressBucket.RUNNING, ProgressBucket.FAILED), 0
        )
        for step in self.steps.values():
            bucket = BUCKET.get(step.status)
            if bucket is not None:
                buckets[bucket] += 1
        done = sum(buckets.values())
        return (
            total,
            buckets[ProgressBucket.COMPLETED],
            buckets[ProgressBucket.RUNNING],
            buckets[ProgressBucket.FAILED],
            total - done,
        )


class RunsView:
    """Folds events into per-run views; `render()` gives what a person should see now."""

    def __init__(self, max_step_lines: int = 12) -> None:
        self.runs: dict[str, RunView] = {}
        self.max_step_lines = max_step_lines
        self.notice: str | None = None  # e.g. "disconnected (...), retrying in 4 s"
        # While the daemon is away: why, when the next attempt is due (trio.current_time()
        # seconds, the client's clock), for the countdown of `tick`.
        self._lost: tuple[str, float] | None = None
        #: The file error of each DAG whose file is broken now, oldest first; a
        #: `dag_status` event with no file error (the file loads again) clears it.
        self.dag_errors: dict[str, str] = {}

    def disconnected(self, message: str, retry_in: float, now: float) -> None:
        """The connection was lost (`message`, from the client's ConnectionLost); the next
        attempt is `retry_in` seconds after `now`. The notice counts down from there."""
        self._lost = (message, now + retry_in)
        self.tick(now)

    def tick(self, now: float) -> None:
        """Bring the countdown of the notice to `now` (whole seconds, rounded)."""
        if self._lost is None:
            return
        message, due = self._lost
        left = round(due - now)
        self.notice = f"disconnected ({message}), " + (
            f"retrying in {left} s" if left > 0 else "retrying now"
        )

    def reconnected(self) -> None:
        """Connected again: the notice goes."""
        self._lost = None
        self.notice = None

    def view(self, dag_id: str, run_id: str) -> RunView:
        """The view of `run_id`, made on first sight."""
        run = self.runs.get(run_id)
        if run is None:
            run = self.runs[run_id] = RunView(dag_id, run_id)
        return run

    def apply(self, event: DagEvent) -> None:
        """Fold one event into the views (a DAG file's error is kept apart, until a
        `dag_status` event says the file loads again)."""
        if isinstance(event, DagStatusEvent):
            self.dag_errors.pop(event.dag_id, None)
            if event.file_error:
                self.dag_errors[event.dag_id] = event.file_error
            return
        if isinstance(event, ErrorEvent) and event.run_id is None:
            self.dag_errors.pop(event.dag_id, None)  # re-inserted: the newest shows last
            self.dag_errors[event.dag_id] = event.error
            return
        assert event.run_id is not None
        run = self.view(event.dag_id, event.run_id)
        if isinstance(event, DagRunStatusEvent):
            run.status = event.status
            if event.status is RunStatus.RUNNING and run.started is None:
                run.started = event.timestamp
            if event.status in FINISHED_RUN:
                run.ended = event.timestamp
        elif isinstance(event, StepStatusEvent):
            run.steps[event.step_id] = event
        elif isinstance(event, DagRunProgressEvent):
            run.progress = event
        elif isinstance(event, ErrorEvent):
            run.errors.append(event)

    # ------------------------------------------------------------ plain lines

    @staticmethod
    def line(event: DagEvent) -> str | None:
        """One line for a log, or None for events not worth a line (progress)."""
        if isinstance(event, DagRunProgressEvent):
            return None
        stamp = _clock_time(int(event.timestamp))
        if isinstance(event, DagRunStatusEvent):
            return f"{stamp}  run {event.dag_id} {event.run_id}: {event.status}"
        if isinstance(event, StepStatusEvent):
            extra = f" ({format_duration(event.duration)})" if event.duration is not None else ""
            if event.retry_count:
                extra += f" [retry {event.retry_count}]"
            if event.error and event.status is not S.RETRYING:
                extra += f": {event.error}"
            return f"{stamp}  {event.step_id:<24} {event.status}{extra}"
        if isinstance(event, ErrorEvent):
            where = f"{event.dag_id}/{event.step_id}" if event.step_id else event.dag_id
            return f"{stamp}  error in {where}: {event.error}"
        if isinstance(event, DagStatusEvent):
            state = "paused" if event.paused else "active"
            if event.file_error:
                first = event.file_error.splitlines()[0] if event.file_error.strip() else ""
                state += f", running the last good version; {first}"
            return f"{stamp}  dag {event.dag_id}: {state}"
        return None

    # ------------------------------------------------------------------ live

    def render(self) -> RenderableType:
        """What to show now, cut to the console's height (see `_FitToHeight`)."""
        return _FitToHeight(self)

    def _head(self) -> list[RenderableType]:
        parts: list[RenderableType] = []
        if self.notice:
            parts.append(Text(self.notice, style="bold yellow"))
        for dag_id, error in list(self.dag_errors.items())[-3:]:
            parts.append(Text(f"✘ {dag_id}: {error}", style="red"))
        if not self.runs and not self.notice:
            parts.append(Text("waiting for runs…", style="dim"))
        return parts

    def _render_run(self, run: RunView) -> RenderableType:
        total, completed, running, failed, pending = run.counts()
        head = Text()
        head.append(f"{SYMBOL.get(run.status, '?')} {run.dag_id} ", style="bold")
        head.append(run.run_id, style="dim")
        head.append(f"  {run.status}", style=STYLE.get(run.status, ""))
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=max(total, 1), completed=completed + failed, width=40),
            Text(
                f"{completed}/{total} done, {running} running, {failed} failed, {pending} pending"
            ),
        )
        steps = Table.grid(padding=(0, 1))
        shown = [s for s in run.steps.values() if s.status in NOTEWORTHY]
        shown.sort(key=lambda s: (s.status in MOVING, s.timestamp))
        hidden = max(0, len(shown) - self.max_step_lines)
        for s in shown[-self.max_step_lines :]:
            steps.add_row(
                Text(f"  {SYMBOL.get(s.status, '?')}", style=STYLE.get(s.status, "")),
                Text(s.step_id),
                Text(str(s.status), style=STYLE.get(s.status, "")),
                Text(f"retry {s.retry_count}" if s.retry_count else ""),
                Text((s.error or "")[:80], style="red"),
            )
        parts: list[RenderableType] = [head, bar]
        if hidden:
            parts.append(Text(f"  … {hidden} more", style="dim"))
        parts.append(steps)
        return Group(*parts)

    def _fit(self, console: Console, options: ConsoleOptions) -> list[RenderableType]:
        """The head, then as many runs as fit in the height: active runs first, then the
        newest finished ones, shown in the order they started."""
        height = options.height if options.height is not None else console.height
        options = options.update(height=None)
        head = self._head()
        budget = height - sum(len(console.render_lines(p, options, pad=False)) for p in head)
        runs = list(self.runs.values())
        finished = FINISHED_RUN
        order = [r for r in reversed(runs) if r.status not in finished]
        order += [r for r in reversed(runs) if r.status in finished]
        chosen: dict[str, RenderableType] = {}
        for n, run in enumerate(order):
            block = self._render_run(run)
            lines = len(console.render_lines(block, options, pad=False))
            more = 1 if n < len(order) - 1 else 0  # room for the "not shown" line
            if lines + more > budget and chosen:  # (one run is shown even if cropped)
                break
            chosen[run.run_id] = block
            budget -= lines
        hidden = len(runs) - len(chosen)
        parts = head
        if hidden:
            parts.append(Text(f"… {hidden} more run(s) not shown", style="dim"))
        parts += [chosen[r.run_id] for r in runs if r.run_id in chosen]
        return parts

    def summary(self, run: RunView, console: Console) -> None:
        """The closing lines for a finished run."""
        by_status: dict[str, int] = {}
        for s in run.steps.values():
            by_status[s.status] = by_status.get(s.status, 0) + 1
        took = ""
        if run.started is not None and run.ended is not None:
            took = f" in {format_duration(round((run.ended - run.started) * 1000))}"
        console.print(
            Text(f"{run.dag_id} {run.run_id}: {run.status}{took}", style=STYLE.get(run.status, ""))
        )
        console.print("  " + ", ".join(f"{n} {k}" for k, n in sorted(by_status.items())))
        for s in run.steps.values():
            if s.status is S.FAILED:
                console.print(Text(f"  ✘ {s.step_id}: {s.error}", style="red"))


class _FitToHeight:
    """The view, cut to fit the console's height. A live display crops what does not fit at
    the bottom, where the newest runs are: without this, `dagd watch` stops showing new runs
    once the screen is full."""

    def __init__(self, view: RunsView) -> None:
        self.view = view

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Group(*self.view._fit(console, options))
