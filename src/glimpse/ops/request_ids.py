"""Request ids: one per request, echoed in `X-Request-ID`, carried into the jobs it enqueues and
into every log line written on its behalf (ops/logs.py reads it from here).

The id lives in a context variable: set by the request middleware (ops/request_log.py) for the
request's task, and by the worker around a job's handler from the job's payload, so a photo's
processing and its fan-out log under the id of the upload that asked for them.
"""

from __future__ import annotations

import logging
import os
import re
from contextvars import ContextVar
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("glimpse_request_id", default=None)

# Where an enqueued job keeps the id of the request (or job) that enqueued it. Handlers never
# see it: the worker takes it out of the payload first.
PAYLOAD_KEY = "_request_id"

# An id a trusted proxy sends is kept as it is only if it looks like one: it goes into log lines
# and response headers, so nothing that could forge a line or a header gets through.
_WELL_FORMED = re.compile(r"[A-Za-z0-9._:@+=/-]{1,128}")


def new_request_id() -> str:
    return os.urandom(16).hex()  # (as random as uuid4().hex, the same form, a third the time)


def accepted_request_id(given: str | None) -> str | None:
    """`given` if it is a well-formed id, else None (a new one is made)."""
    if given is not None and _WELL_FORMED.fullmatch(given):
        return given
    return None


def tag_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload with the current request's id added, if there is one."""
    current = REQUEST_ID.get()
    if current is None or PAYLOAD_KEY in payload:
        return payload
    return {**payload, PAYLOAD_KEY: current}


def untag_payload(payload: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The payload as its handler expects it, and the id of the request that enqueued it."""
    if PAYLOAD_KEY not in payload:
        return payload, None
    rest = dict(payload)
    request_id = rest.pop(PAYLOAD_KEY)
    return rest, request_id if isinstance(request_id, str) else None


_stamping = False


def stamp_log_records() -> None:
    """Give every log record made from now on, by any logger, the current request id as its
    `request_id` attribute (None outside requests and jobs): taken when the line is written,
    whenever and wherever a handler formats it. Idempotent."""
    global _stamping
    if _stamping:
        return
    _stamping = True
    make = logging.getLogRecordFactory()

    def stamped(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        record.request_id = REQUEST_ID.get()
        return record

    logging.setLogRecordFactory(stamped)
