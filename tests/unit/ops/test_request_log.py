"""The request log middleware's part of an answer: the request id header, whatever the app set."""

from __future__ import annotations

from typing import Any

from glimpse.ops.request_log import RequestLog


async def answer(app: Any) -> list[tuple[bytes, bytes]]:
    scope = {"type": "http", "method": "GET", "path": "/x", "headers": [], "state": {}}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await RequestLog(app, trust_incoming=False, log_requests=False)(scope, receive, send)
    headers: list[tuple[bytes, bytes]] = sent[0]["headers"]
    return headers


def replying(headers: list[tuple[bytes, bytes]]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def test_the_answer_carries_one_request_id_ours_and_keeps_its_other_headers() -> None:
    plain = await answer(replying([(b"content-type", b"text/plain")]))
    [ours] = [v for k, v in plain if k == b"x-request-id"]
    assert len(ours) == 32 and (b"content-type", b"text/plain") in plain
    # An app's own id (any case) gives way to ours: one id per answer, the one in the log.
    own = [(b"X-Request-ID", b"app-made"), (b"content-type", b"text/plain")]
    headers = await answer(replying(own))
    ids = [v for k, v in headers if k.lower() == b"x-request-id"]
    assert len(ids) == 1 and ids[0] != b"app-made" and len(ids[0]) == 32
    assert (b"content-type", b"text/plain") in headers
