"""An ASGI middleware in front of Gradio's /login: refuses a throttled name or address with 429
and a message saying how long to wait, and tells the throttle how each attempt went. Gradio's own
login check (our `Users.authenticate`) does the password comparison."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

from engine.console.people.logins import LoginThrottle

MAX_FORM_BYTES = 16 << 10  # a user name and a password


class LoginGuard:
    def __init__(self, app, throttle: LoginThrottle):
        self.app = app
        self.throttle = throttle

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" \
                or scope["path"].rstrip("/").rsplit("/", 1)[-1] != "login":
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_FORM_BYTES:
                await _reply(send, 413, "login form too large")
                return
        form = parse_qs(body.decode("utf-8", "replace"))
        name = (form.get("username") or [""])[0].strip()[:200]
        address = (scope.get("client") or ("unknown",))[0]
        wait = self.throttle.wait_s(name, address)
        if wait > 0:
            await _reply(send, 429, self.throttle.message(name, address, wait))
            return

        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def watch(message):
            if message["type"] == "http.response.start":
                if message["status"] == 200:
                    self.throttle.succeeded(name)
                elif message["status"] in (400, 401, 403):
                    self.throttle.failed(name, address)
            await send(message)

        await self.app(scope, replay, watch)


async def _reply(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
