"""Who may connect: the accepted tokens (as SHA-256 digests) and the throttle that slows down
repeated auth failures from one peer address."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable

import attrs

from dagd.core.config import Config, ConfigError


@attrs.frozen
class TokenEntry:
    """One accepted token: its SHA-256 digest (32 bytes), its role ('operate' or 'read') and
    its name (for the log, never the token)."""

    digest: bytes
    role: str
    name: str


class TokenBook:
    """Accepted tokens as SHA-256 digests; checks take the same time whichever one matches."""

    def __init__(self, entries: list[TokenEntry], generated_file: str | None = None) -> None:
        self.entries = entries
        self.generated_file = generated_file

    @classmethod
    def from_config(cls, config: Config) -> TokenBook:
        """The tokens of config.tokens, or the generated token file's if none is configured.
        Raises ConfigError (a ValueError; one line naming the entry) for a bad sha256 or an
        unset or empty environment variable."""
        entries = []
        from_env = config.token_values(os.environ)
        for spec, value in zip(config.tokens, from_env, strict=True):
            if value is not None:
                digest = hashlib.sha256(value.encode()).digest()
            elif spec.token is not None:
                digest = hashlib.sha256(spec.token.encode()).digest()
            elif spec.sha256 is not None:
                try:
                    digest = bytes.fromhex(spec.sha256)
                except ValueError:
                    raise ConfigError(f"auth token {spec.name!r}: sha256 is not hex") from None
                if len(digest) != 32:
                    raise ConfigError(f"auth token {spec.name!r}: sha256 must be 64 hex digits")
            else:
                raise AssertionError("parse_config allows exactly one of token, sha256, env")
            entries.append(TokenEntry(digest, spec.role, spec.name or spec.role))
        if entries:
            return cls(entries)
        token = ensure_token_file(config)
        return cls(
            [TokenEntry(hashlib.sha256(token.encode()).digest(), "operate", "generated")],
            generated_file=str(config.token_file),
        )

    def check(self, token: str) -> TokenEntry | None:
        """The entry `token` matches, None if none does."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found = None
        for entry in self.entries:  # no early exit: timing says nothing about which matched
            if hmac.compare_digest(digest, entry.digest):
                found = entry
        return found


def ensure_token_file(config: Config) -> str:
    """The generated token in the state folder (mode 0600), created on first use."""
    path = config.token_file
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token
    # Missing, or empty (never an empty token: "" would then open the door to anyone).
    # Written to a temporary file and renamed, so a crash never leaves an empty token file.
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return token


class AuthThrottle:
    """Slows down repeated auth failures from one peer address: the answer to the second
    failure in a row waits 0.25 s, the third 0.5 s, ... up to 5 s. Only failures wait, after
    the token was checked: a right token is answered at once, whatever came before it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._failures: dict[str, tuple[int, float]] = {}
        self._clock = clock

    def delay(self, peer: str) -> float:
        """Seconds to wait before answering `peer`'s failure that `failed` has just counted
        (0 for the first in 300 s)."""
        count, last = self._failures.get(peer, (0, 0.0))
        if count <= 1 or self._clock() - last > 300:
            return 0.0
        return min(5.0, 0.25 * 2.0 ** (count - 2))

    def failed(self, peer: str) -> None:
        """Count a failed auth from `peer` (forgotten after 300 s without one)."""
        count, last = self._failures.get(peer, (0, 0.0))
        if self._clock() - last > 300:
            count = 0
        self._failures[peer] = (count + 1, self._clock())
        if len(self._failures) > 10_000:  # forget the oldest peers
            for key in sorted(self._failures, key=lambda k: self._failures[k][1])[:5000]:
                del self._failures[key]

    def succeeded(self, peer: str) -> None:
        """Forget `peer`'s failures."""
        self._failures.pop(peer, None)
