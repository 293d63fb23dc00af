"""Access and size limits, as plain ASGI middleware (they answer before FastAPI parses a body).

- An API key (`X-API-Key: KEY`) or a bearer token (`Authorization: Bearer KEY`) is required on
  every path but the probes, the metrics and the API docs; keys are compared with
  hmac.compare_digest against each configured key, so the time taken does not tell how much of a
  key was right.
- A body longer than `max_body_bytes` is refused with 413, by its Content-Length or, without one,
  as soon as the streamed bytes pass the limit.
"""
from __future__ import annotations

import hmac
import json
import os

from starlette.exceptions import HTTPException

OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/docs/oauth2-redirect")
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


def load_keys(key_file: str | None, env: str = "SMESCORE_API_KEYS") -> tuple[bytes, ...]:
    """Keys from a file (one a line, # comments) and/or $SMESCORE_API_KEYS (comma-separated)."""
    keys = []
    if key_file:
        with open(key_file, encoding="utf-8") as fh:
            keys += [line.strip() for line in fh if line.strip() and not line.startswith("#")]
    keys += [k.strip() for k in os.environ.get(env, "").split(",") if k.strip()]
    short = [k for k in keys if len(k) < 16]
    if short:
        raise ValueError(f"{len(short)} API key(s) shorter than 16 characters; use long random "
                         f"keys (e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)")
    return tuple(k.encode() for k in keys)


async def _send_json(send, status: int, payload: dict, headers=()) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class AccessMiddleware:
    """401 without a valid key (unless auth is off: keys=None), 413 for an oversized body."""

    def __init__(self, app, keys: tuple[bytes, ...] | None, max_body_bytes: int):
        self.app = app
        self.keys = keys
        self.max_body_bytes = max_body_bytes

    def _presented(self, headers: dict) -> bytes | None:
        if b"x-api-key" in headers:
            return headers[b"x-api-key"].strip()
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        return token.strip() if scheme.lower() == b"bearer" and token.strip() else None

    def _allowed(self, key: bytes | None) -> bool:
        ok = False
        for k in self.keys:              # every key compared: no early exit on a match
            ok |= key is not None and hmac.compare_digest(key, k)
        return ok

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.keys is not None and scope["path"] not in OPEN_PATHS:
            key = self._presented(headers)
            if not self._allowed(key):
                why = "no API key" if key is None else "wrong API key"
                return await _send_json(send, 401, {
                    "error": f"{why}: send 'X-API-Key: KEY' or 'Authorization: Bearer KEY'"},
                    [(b"www-authenticate", b'Bearer realm="smescore"')])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_long = int(declared) > self.max_body_bytes
            except ValueError:
                return await _send_json(send, 400, {"error": "bad Content-Length header"})
            if too_long:
                return await _send_json(send, 413, self._too_large(int(declared)))
        return await self.app(scope, self._limited(receive, send), send)

    def _too_large(self, n: int) -> dict:
        return {"error": f"request body of {n:,} bytes is over the limit of "
                         f"{self.max_body_bytes:,} bytes (send fewer firms per request)"}

    def _limited(self, receive, send):
        seen = 0

        async def receive_limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise BodyTooLarge(self._too_large(seen))
            return message
        return receive_limited


class BodyTooLarge(HTTPException):
    """Raised while FastAPI reads the body; an HTTPException, so it answers 413 as it is."""

    def __init__(self, payload: dict):
        super().__init__(413, payload["error"])
