"""The dashboard's files: read once from a folder, one exact route each, ETag revalidation,
and no way out of the folder."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from httphelp import check_headers, exchange, request, served

from dagd.net.http.message import HttpRequest
from dagd.net.http.static import WEB_DIR, load_files


def make_site(root: Path) -> Path:
    web = root / "web"
    (web / "css").mkdir(parents=True)
    (web / "index.html").write_text("<!doctype html><title>t</title>")
    (web / "app.js").write_text("export const x = 1;\n")
    (web / "css" / "site.css").write_text("body { margin: 0 }\n")
    (web / "data.bin").write_bytes(b"\x00\x01")
    (web / ".hidden").write_text("secret")
    (root / "outside.txt").write_text("outside the folder")
    os.symlink(root / "outside.txt", web / "leak.txt")
    os.symlink(root, web / "up")
    os.symlink(web / "app.js", web / "alias.js")  # inside: served
    return web


def test_only_files_inside_the_folder_are_served(tmp_path: Path) -> None:
    files = {f.url: f for f in load_files(make_site(tmp_path))}
    assert sorted(files) == [
        "/",
        "/assets/alias.js",
        "/assets/app.js",
        "/assets/css/site.css",
        "/assets/data.bin",
        "/assets/index.html",
    ]
    assert files["/assets/app.js"].content_type == "text/javascript; charset=utf-8"
    assert files["/assets/css/site.css"].content_type == "text/css; charset=utf-8"
    assert files["/"].content_type == "text/html; charset=utf-8"
    assert files["/assets/data.bin"].content_type == "application/octet-stream"
    assert files["/"].etag == files["/assets/index.html"].etag != files["/assets/app.js"].etag
    assert files["/assets/alias.js"].etag == files["/assets/app.js"].etag
    # as docs/http.md says: the first 32 hex digits of the SHA-256 of the bytes, quoted
    app = files["/assets/app.js"]
    assert app.etag == '"' + hashlib.sha256(app.body).hexdigest()[:32] + '"'


def test_a_missing_folder_is_no_files(tmp_path: Path) -> None:
    assert load_files(tmp_path / "nowhere") == []


async def test_etag_revalidation(tmp_path: Path) -> None:
    [app] = [f for f in load_files(make_site(tmp_path)) if f.url == "/assets/app.js"]
    fresh = await app.handle(HttpRequest("GET", app.url), {})
    assert fresh.status == 200 and fresh.body == b"export const x = 1;\n"
    assert dict(fresh.headers) == {"etag": app.etag, "cache-control": "no-cache"}
    for header in (app.etag, f"W/{app.etag}", f'"x", {app.etag}', "*"):
        again = await app.handle(HttpRequest("GET", app.url, headers={"if-none-match": header}), {})
        assert (again.status, again.body) == (304, b""), header
    stale = await app.handle(HttpRequest("GET", app.url, headers={"if-none-match": '"x"'}), {})
    assert stale.status == 200


async def test_the_packaged_dashboard_is_served(tmp_path: Path) -> None:
    index = (WEB_DIR / "index.html").read_bytes()
    async with served(tmp_path) as (_server, port):
        close = (("Connection", "close"),)
        [page] = await exchange(port, request("/", headers=close))
        assert page.status == 200
        assert page.body == index
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["cache-control"] == "no-cache"
        check_headers(page)
        etag = page.headers["etag"]
        [same] = await exchange(port, request("/", headers=(("If-None-Match", etag), *close)))
        assert same.status == 304
        assert same.body == b"" and "content-length" not in same.headers
        assert same.headers["etag"] == etag
        check_headers(same)
        scripts = sorted(p.name for p in WEB_DIR.glob("*.js"))
        for name in scripts[:3]:
            [script] = await exchange(port, request(f"/assets/{name}", headers=close))
            assert script.status == 200, name
            assert script.headers["content-type"] == "text/javascript; charset=utf-8"
            assert script.body == (WEB_DIR / name).read_bytes()


TRAVERSALS = [
    "/assets/../net/server.py",
    "/assets/%2e%2e/http/static.py",
    "/assets/%2E%2E/%2E%2E/core/config.py",
    "/assets/..%2fhttp%2fstatic.py",
    "/assets//etc/passwd",
    "/assets/%2Fetc%2Fpasswd",
    "//etc/passwd",
    "/assets/./index.html",
    "/assets/vendor/../../http/static.py",
    "/assets/index.html%00.js",
    "/assets/",
    "/assets",
    "/etc/passwd",
    "/index.html/",
]


@pytest.mark.parametrize("target", TRAVERSALS)
async def test_no_path_leaves_the_folder(tmp_path: Path, target: str) -> None:
    async with served(tmp_path) as (_server, port):
        [reply] = await exchange(port, request(target))
        assert reply.status == 404, target
        assert b"import" not in reply.body and b"root:" not in reply.body
