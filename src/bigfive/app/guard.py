"""Same-origin only, as ASGI middleware in front of every route of ``bigfive app``.

- **Host**: a request whose ``Host`` is not one of the server's own names (its ``--host`` and port, the
  loopback names, ``--allow-host``) is refused with 421. This stops DNS rebinding: a page on
  ``evil.example`` whose name is re-pointed at 127.0.0.1 still sends ``Host: evil.example``.
- **Origin**: a state-changing request (anything but GET/HEAD/OPTIONS) whose ``Origin`` -- or, without
  one, ``Referer`` -- is another site is refused with 403 (cross-site request forgery: a browser
  sends a ``text/plain`` POST cross-origin without asking). Clients that send neither (curl, scripts)
  are not browsers acting for another site and pass.
- Every response carries ``X-Content-Type-Options: nosniff`` and a Content-Security-Policy that allows
  only this server's own scripts, styles and images, no framing and no plugins.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                 b"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),  # results describe people's faces: no copies in shared caches
]


def allowed_hosts(host: str, port: int, extra: Iterable[str] = ()) -> set[str]:
    """The ``Host`` values (``name:port``, lower case) this server answers to."""
    names = {host.lower(), *(n.lower() for n in extra)}
    if host in ("127.0.0.1", "localhost", "::1"):
        names.update(LOOPBACK)
    names = {f"[{n}]" if ":" in n and not n.startswith("[") else n for n in names}
    return {f"{n}:{port}" for n in names} | ({*names} if port == 80 else set())


class SameOrigin:
    """Refuse foreign ``Host`` and cross-site state-changing requests; add the security headers."""

    def __init__(self, app: Any, hosts: set[str]):
        self.app, self.hosts = app, hosts

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self.refusal(scope)
        if refused is not None:
            await _answer(send, *refused)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def refusal(self, scope: dict) -> tuple[int, str] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "").lower()
        if host not in self.hosts:
            return 421, f"Host {host[:80]!r} is not this server (bigfive app --host/--allow-host)"
        if scope["method"] in SAFE_METHODS:
            return None
        source = headers.get("origin") or headers.get("referer")
        if source is None:
            return None
        parts = urlsplit(source)
        if source == "null" or parts.scheme not in ("http", "https") or parts.netloc.lower() not in self.hosts:
            return 403, f"cross-site request refused (Origin {source[:80]!r} is not this page)"
        return None


async def _answer(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *HEADERS]})
    await send({"type": "http.response.body", "body": body})
