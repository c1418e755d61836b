"""Log lines of every process (API, workers, uvicorn's own) in one format: JSON objects, one a
line, for a log shipper, or text for a person at a terminal. Each line written on behalf of a
request or a job carries its request id (ops/request_ids.py).

Structured fields travel in a record's `extra={"fields": {...}}`; the request id is stamped on
each record as it is made (request_ids.stamp_log_records).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from glimpse.ops.request_ids import stamp_log_records


def _request_id(record: logging.LogRecord) -> str | None:
    given = getattr(record, "request_id", None)
    return given if isinstance(given, str) else None


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    # One access line a request: what each line costs is part of what operations cost
    # (BENCHMARKS.md, "The cost of operations"), hence orjson and the time's date and second
    # made once a second.

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def _time(self, created: float) -> str:
        # (As datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds") writes
        # it: the time rounded to the microsecond, then the milliseconds cut.)
        second = int(created)
        micro = round((created - second) * 1_000_000)
        if micro == 1_000_000:
            second, micro = second + 1, 0
        if second != self._second:
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._second_text}.{micro // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        request_id = _request_id(record)
        if request_id is not None:
            line["request_id"] = request_id
        line.update(_fields(record))
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        # default=str: a field nobody thought to make JSON (a Path, a datetime) must not cost
        # the line.
        try:
            return orjson.dumps(line, default=str).decode()
        except TypeError:
            # What orjson refuses even so (an int past 64 bits, a key that is not a string):
            # the standard library writes it.
            return json.dumps(line, default=str, ensure_ascii=False)


# What ends a line or moves a terminal's cursor: C0 and C1 controls, DEL and Unicode's line and
# paragraph separators. A message carries what clients sent (a request's path, percent-decoded, in
# api/errors.py's lines): an escape sequence in it could redraw the operator's terminal into a
# line nobody wrote (JSON lines escape them already).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _printable(text: str) -> str:
    return _UNPRINTABLE.sub(lambda m: ascii(m[0])[1:-1], text)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        # (The traceback, added after this, keeps its lines: Python wrote them.)
        return _printable(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = [f"{k}={_printable(str(v))}" for k, v in _fields(record).items()]
        request_id = _request_id(record)
        if request_id is not None:
            extras.insert(0, f"request_id={request_id}")
        if not extras:
            return text
        head, newline, rest = text.partition("\n")  # (after the message, before a traceback)
        return f"{head} {' '.join(extras)}{newline}{rest}"


def chosen_format(setting: str, stream: Any = None) -> str:
    """`json` or `text`: the setting, or json unless the stream is a terminal."""
    if setting in ("json", "text"):
        return setting
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def setup_logging(log_format: str = "") -> None:
    """One handler on the root logger, in the chosen format; uvicorn's loggers send their lines
    to it (uvicorn is started with log_config=None, and its access log off: ours replaces it)."""
    stamp_log_records()
    # What no line of ours shows, and every record would otherwise look up: the caller's file
    # and line (a walk up the stack), its thread and its multiprocessing name. (The logging
    # documentation's "Optimization" section; a third of what an access line cost.)
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if chosen_format(log_format) == "json" else TextFormatter()
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(os.environ.get("GLIMPSE_LOG_LEVEL", "INFO").upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
