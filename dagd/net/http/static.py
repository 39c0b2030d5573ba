"""The dashboard's files: the package folder dagd/net/web/, read into memory once at start.

`GET /` is `index.html`; every file of the folder (subfolders included) is
`GET /assets/<its path in the folder>`, e.g. web/app.js is `/assets/app.js`. Each file is one
exact route, so no request path is ever joined to a file name: `..`, `%2e%2e`, absolute paths
and the like find no route (404), and a symbolic link that leads outside the folder is never
read. Dot files, `__pycache__`, and names with `{` or `}` (not a route pattern) are left out.

Every answer carries a strong `ETag` (the first 32 hex digits of the content's SHA-256) and
`Cache-Control: no-cache` (the names are not content-hashed, so a browser revalidates each
time); `If-None-Match` with that tag (or `*`) gets 304 without a body. Content types by
extension (`CONTENT_TYPES`; `.js` is text/javascript, which ES modules require); other files
are application/octet-stream.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import attrs

from dagd.net.http.context import HttpContext
from dagd.net.http.message import HttpRequest, HttpResponse, Route

log = logging.getLogger("dagd.net.http")

#: The folder the dashboard's files are read from (package data: pyproject.toml).
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
#: The URL prefix of every file but index.html.
ASSETS = "/assets/"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
    ".webmanifest": "application/manifest+json",
}


@attrs.frozen
class StaticFile:
    """One file as served: its URL path, bytes, content type and strong ETag (quoted)."""

    url: str
    body: bytes
    content_type: str
    etag: str

    async def handle(self, request: HttpRequest, params: Mapping[str, str]) -> HttpResponse:
        """200 with the file, or 304 when the request's If-None-Match has its tag."""
        headers = (("etag", self.etag), ("cache-control", "no-cache"))
        if _matches(request.header("if-none-match"), self.etag):
            return HttpResponse(304, headers=headers)
        return HttpResponse(200, self.body, self.content_type, headers)


def load_files(root: Path = WEB_DIR) -> list[StaticFile]:
    """Every file under `root` to serve, read now (`/` for root/index.html too). A missing
    folder is no files. Symbolic links are followed only while they stay inside `root`."""
    files: list[StaticFile] = []
    if not root.is_dir():
        return files
    top = root.resolve()
    for folder, dirs, names in os.walk(top, followlinks=False):
        dirs[:] = sorted(d for d in dirs if _servable(d) and _inside(Path(folder, d), top))
        for name in sorted(names):
            path = Path(folder, name)
            if not _servable(name) or not _inside(path, top) or not path.is_file():
                continue
            relative = path.relative_to(top).as_posix()
            try:
                body = path.read_bytes()
            except OSError as exc:
                log.warning("dashboard file %s not served: %s", path, exc)
                continue
            kind = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            files.append(StaticFile(ASSETS + relative, body, kind, etag))
            if relative == "index.html":
                files.append(StaticFile("/", body, kind, etag))
    return files


def file_routes(files: list[StaticFile]) -> list[Route]:
    """One exact `GET` route per file."""
    return [Route(frozenset({"GET"}), file.url, file.handle) for file in files]


def routes(ctx: HttpContext) -> list[Route]:
    """The dashboard's files from dagd/net/web/, read now."""
    return file_routes(load_files())


def _servable(name: str) -> bool:
    return not name.startswith(".") and name != "__pycache__" and not set(name) & set("{}")


def _inside(path: Path, top: Path) -> bool:
    """Does `path`, its links resolved, lie under `top`?"""
    try:
        return path.resolve().is_relative_to(top)
    except (OSError, RuntimeError):  # a link loop
        return False


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 13.1.2: weak comparison, `*` matches any."""
    if if_none_match is None:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False
