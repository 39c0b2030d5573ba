"""Notification handlers (`notify = ["<apprise URL>", ...]`): their attempts, sent with Apprise.

The one module of dagd that imports Apprise (https://github.com/caronc/apprise), and only when
it is used: importing it and loading its plugins takes about 2 s, in a worker thread.

An attempt expands `$VAR` / `${VAR}` in each URL (dagd/core/text.py) against dagd's environment
less its own secrets, with the handler's `env` over it, renders the title and body
(dagd/core/outcome.py), and sends to each URL in turn in a worker thread, under the handler's
`timeout` (default `DEFAULT_TIMEOUT`). It succeeds when every URL took the notification; else
it fails with one line per URL that did not, each naming the URL as `redact_url` shows it and
saying why (Apprise's own warning, its secrets removed).

Secrets: Apprise's and urllib3's own log records (which may carry URLs, tokens in them
included) never reach dagd's log: `_quiet_libraries` keeps the `apprise` logger from
propagating and urllib3's debug records (request lines) out. What dagd says about a URL goes
through `redact_url`; the secrets of a URL, and the values of the variables it uses, are cut
out of any Apprise message quoted in an error.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import trio

from dagd.core.model import StepSpec
from dagd.core.outcome import HOST_SCHEMES, notification, redact_url
from dagd.core.runstate import format_seconds
from dagd.core.text import expand_env, one_line
from dagd.runtime.executor import AttemptResult, Leftover, LeftoverSink, StepContext
from dagd.runtime.local.environment import ALWAYS_HIDDEN

log = logging.getLogger("dagd.runtime.notify")

#: Seconds a notification attempt may take when its handler sets no `timeout`.
DEFAULT_TIMEOUT = 60.0
#: Seconds past `timeout` after which a notification attempt that Apprise did not end is
#: abandoned (its thread left to finish on its own).
BACKSTOP = 2.0
#: The name notification attempts are reported under (they need no executor).
NAME = "notify"

_REFERENCE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
_URL_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_setup_lock = threading.Lock()
_quieted = False


def _quiet_libraries() -> None:
    """Keep Apprise's log records out of dagd's log (they may carry URLs), and urllib3's debug
    request lines (which carry paths and queries), once per process."""
    global _quieted
    with _setup_lock:
        if _quieted:
            return
        logging.getLogger("apprise").propagate = False
        urllib3_log = logging.getLogger("urllib3")
        if urllib3_log.level == logging.NOTSET:
            urllib3_log.setLevel(logging.INFO)
        _quieted = True


def _apprise() -> Any:
    """The apprise module, imported with its plugins loaded (slow: call it in a worker
    thread)."""
    _quiet_libraries()
    with _setup_lock, warnings.catch_warnings():
        # Some plugins import modules Python deprecates (imghdr on 3.11/3.12): not dagd's to
        # fix, and not to become a failed notification where warnings are errors.
        warnings.simplefilter("ignore", DeprecationWarning)
        apprise: Any = importlib.import_module("apprise")  # its plugins' types are loose
        apprise.manager_plugins.NotificationManager().schemas()  # loads them, once
    return apprise


def secrets_of(url: str, env: Mapping[str, str] | None = None) -> list[str]:
    """The parts of an expanded `url` that may be secret (user, password, path segments, query
    values, and the host of a scheme whose host is a token), and the values of the variables
    the written URL uses (`env`: the values they expanded from), longest first."""
    found: set[str] = set()
    try:
        parts = urlsplit(url.strip())
        raw = {p for p in (parts.username, parts.password) if p}
        raw.update(segment for segment in parts.path.split("/") if segment)
        if parts.fragment:
            raw.add(parts.fragment)
        # Percent-decoded too: a plugin may quote a secret as it decoded it ("p%40ss": "p@ss").
        found.update(raw)
        found.update(unquote(part) for part in raw)
        found.update(value for _, value in parse_qsl(parts.query) if value)
        if parts.scheme.lower() not in HOST_SCHEMES and parts.hostname:
            found.add(parts.hostname)
    except ValueError:
        found.add(url)
    if env:
        found.update(env.values())
    return sorted((s for s in found if len(s) >= 3), key=len, reverse=True)


def scrub(text: str, secrets: Sequence[str]) -> str:
    """`text` with every URL in it shown as `redact_url` does and each of `secrets` as `***`:
    what dagd may quote of a message about a URL."""
    text = _URL_TEXT.sub(lambda m: redact_url(m[0]), text)
    for secret in secrets:
        text = text.replace(secret, "***")
    return one_line(text)


def url_problem(url: str) -> str | None:
    """Why Apprise cannot send to `url` as written, or None (no network is used). A URL that
    uses `$VAR` is only checked for a scheme Apprise knows: its value is known when it is sent.
    Imports Apprise (about 2 s the first time): call it in a worker thread."""
    apprise = _apprise()
    if "$" in url:
        scheme = url.partition("://")[0].lower()
        if "$" in scheme or not scheme:
            return None
        if scheme not in apprise.manager_plugins.NotificationManager().schemas():
            return f"{redact_url(url)}: Apprise knows no scheme {scheme!r}"
        return None
    logs: list[str] = []
    handler = _Collect(logs)
    apprise_log = logging.getLogger("apprise")
    apprise_log.addHandler(handler)
    try:
        ok = apprise.Apprise().add(url)
    finally:
        apprise_log.removeHandler(handler)
    if ok:
        return None
    why = "; ".join(scrub(m, secrets_of(url)) for m in logs if not m.startswith("Could not load"))
    return f"{redact_url(url)}: Apprise cannot read it" + (f" ({why})" if why else "")


class _Collect(logging.Handler):
    """Collects the WARNING and ERROR messages of this thread (Apprise's, while adding a URL)."""

    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into
        self.thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.into.append(record.getMessage())


def send(
    urls: Sequence[tuple[str, str, list[str]]], title: str, body: str, timeout: float
) -> list[str]:
    """Send one notification to each (written URL, expanded URL, its secrets), in turn, all
    within `timeout` seconds; blocks (call it in a worker thread). Returns one line per URL
    that did not take it (empty: all did), never a secret."""
    apprise = _apprise()
    failures: list[str] = []
    deadline = time.monotonic() + timeout
    for i, (written, url, secrets) in enumerate(urls, start=1):
        where = f"notify URL {i} ({redact_url(written)})"
        logs: list[str] = []
        client = apprise.Apprise()
        handler = _Collect(logs)
        apprise_log = logging.getLogger("apprise")
        apprise_log.addHandler(handler)
        try:
            added = client.add(url)
        finally:
            apprise_log.removeHandler(handler)
        if not added:
            failures.append(f"{where}: Apprise cannot read it")
            continue
        result = client.notify(
            body=body,
            title=title,
            timeout=max(0.1, deadline - time.monotonic()),
            log_callback=_appender(logs),
            log_level=logging.WARNING,
        )
        if not result:
            status = getattr(getattr(result, "status", None), "name", "FAILURE").lower()
            why = "; ".join(dict.fromkeys(scrub(m, secrets) for m in logs)) or status
            failures.append(f"{where}: not delivered: {why}")
    return failures


def _appender(logs: list[str]) -> Any:
    """Apprise's `log_callback`: each entry's message into `logs`."""

    def add(entry: Any, _service: Any) -> None:
        logs.append(str(entry.message))

    return add


class Notifier:
    """Runs notification handlers' attempts, as an executor would (`StepExecutor.run`).

    `base_env`: the environment `$VAR` expands from (None: dagd's own), less `hidden` (dagd's
    own secrets, as for steps). `limiter`: bounds the worker threads sending (an abandoned
    send, after a timeout or cancel, still holds its thread until Apprise gives up)."""

    name = NAME
    log_dir: Path | None = None

    def __init__(
        self,
        base_env: Mapping[str, str] | None = None,
        hidden: Collection[str] = ALWAYS_HIDDEN,
        limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        self.base_env = base_env
        self.hidden = tuple(hidden)
        self.limiter = limiter or trio.CapacityLimiter(8)

    def _urls(self, step: StepSpec) -> list[tuple[str, str, list[str]]]:
        """(written, expanded, secrets) of each URL of `step`."""
        env = dict(os.environ if self.base_env is None else self.base_env)
        for name in self.hidden:
            env.pop(name, None)
        for name, value in step.env_order or step.env.items():
            env[name] = expand_env(value, env)
        out = []
        for written in step.notify:
            used = {m[1]: env.get(m[1], "") for m in _REFERENCE.finditer(written)}
            url = expand_env(written, env)
            out.append((written, url, secrets_of(url, used)))
        return out

    async def run(
        self, step: StepSpec, ctx: StepContext, on_leftover: LeftoverSink | None = None
    ) -> AttemptResult:
        """Send the notification of handler `step` about `ctx.outcome`; a failed result names
        each URL that did not take it (redacted). Never raises but for cancellation (the
        sending thread is then abandoned)."""
        if ctx.outcome is None:
            return AttemptResult(False, "a notification needs a run outcome (a handler)")
        title, body = notification(ctx.outcome, step.title, step.body)
        timeout = step.timeout if step.timeout is not None else DEFAULT_TIMEOUT
        urls = self._urls(step)
        failures: list[str] | None = None
        # Apprise keeps to `timeout` itself and says which URL ran out of time; this is the
        # backstop should a plugin not.
        with trio.move_on_after(timeout + BACKSTOP):
            try:
                failures = await trio.to_thread.run_sync(
                    send, urls, title, body, timeout, abandon_on_cancel=True, limiter=self.limiter
                )
            except Exception as exc:  # Apprise or a plugin broke: the attempt fails
                # Scrubbed text only: a traceback's frames and messages can hold the URL.
                secrets = [s for _, _, found in urls for s in found]
                why = scrub(f"{type(exc).__name__}: {exc}", secrets)
                log.debug("notification failed: %s", why)
                return AttemptResult(False, why)
        if failures is None:
            return AttemptResult(False, f"timed out after {format_seconds(timeout)}", True)
        if failures:
            return AttemptResult(False, "; ".join(failures))
        return AttemptResult(True)

    async def clean_up(self, leftovers: Collection[Leftover], run_ids: Collection[str]) -> None:
        """Nothing outlives a notification attempt."""


__all__ = ["DEFAULT_TIMEOUT", "Notifier", "scrub", "secrets_of", "send", "url_problem"]
