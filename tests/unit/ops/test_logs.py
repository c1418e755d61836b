"""The log formats: JSON lines a shipper can parse, text lines a person can read, and each line
carrying the id of the request or job it was written for."""

from __future__ import annotations

import io
import json
import logging

import pytest

from glimpse.ops.logs import JsonFormatter, TextFormatter, chosen_format
from glimpse.ops.request_ids import (
    PAYLOAD_KEY,
    REQUEST_ID,
    accepted_request_id,
    stamp_log_records,
    tag_payload,
    untag_payload,
)


def _record(message: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    stamp_log_records()
    logger = logging.getLogger("glimpse.test")
    return logger.makeRecord(
        logger.name, logging.INFO, __file__, 1, message, args, None, extra=extra
    )


def test_a_json_line_holds_the_message_the_fields_and_the_request_id() -> None:
    token = REQUEST_ID.set("abc123")
    try:
        record = _record("hello %s", "there", fields={"route": "/x", "status": 200})
    finally:
        REQUEST_ID.reset(token)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "hello there"
    assert (line["request_id"], line["route"], line["status"]) == ("abc123", "/x", 200)
    assert line["level"] == "info" and line["logger"] == "glimpse.test" and line["time"]


def test_a_json_line_outside_any_request_has_no_id_and_keeps_its_traceback() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        import sys

        record = _record("failed")
        record.exc_info = sys.exc_info()
    text = JsonFormatter().format(record)
    assert "\n" not in text  # one line, whatever the message or traceback holds
    line = json.loads(text)
    assert "request_id" not in line and "ValueError: boom" in line["error"]


def test_a_text_line_names_the_id_and_the_fields_after_the_message() -> None:
    token = REQUEST_ID.set("abc123")
    try:
        record = _record("GET /x 200", fields={"status": 200})
    finally:
        REQUEST_ID.reset(token)
    assert TextFormatter().format(record).endswith("GET /x 200 request_id=abc123 status=200")


def test_json_unless_a_terminal_or_the_setting_says() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert chosen_format("", io.StringIO()) == "json"
    assert chosen_format("", Terminal()) == "text"
    assert chosen_format("json", Terminal()) == "json"
    assert chosen_format("text", io.StringIO()) == "text"


@pytest.mark.parametrize("given", ["", "a b", "x" * 129, "new\nline", "é", 'q"'])
def test_only_a_well_formed_incoming_id_is_taken(given: str) -> None:
    assert accepted_request_id(given) is None
    assert accepted_request_id("edge-7f3a:42/1") == "edge-7f3a:42/1"


def test_a_job_carries_the_id_of_the_request_that_enqueued_it_and_its_handler_never_sees_it() -> (
    None
):
    assert tag_payload({"post_id": 1}) == {"post_id": 1}  # outside requests: as it was
    token = REQUEST_ID.set("abc123")
    try:
        tagged = tag_payload({"post_id": 1})
    finally:
        REQUEST_ID.reset(token)
    assert tagged == {"post_id": 1, PAYLOAD_KEY: "abc123"}
    assert untag_payload(tagged) == ({"post_id": 1}, "abc123")
    assert untag_payload({"post_id": 1}) == ({"post_id": 1}, None)


def test_a_json_line_s_time_is_the_record_s_to_the_millisecond_in_utc() -> None:
    from datetime import UTC, datetime

    formatter = JsonFormatter()
    record = _record("x")
    for created in (
        1_764_806_400.0,
        1_764_806_400.5004,
        1_764_806_401.25,
        1_764_892_799.999,
        1_764_892_799.9999996,  # (rounds up into the next second)
        1_764_892_800.0009996,
    ):
        record.created = created
        expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        assert json.loads(formatter.format(record))["time"] == expected


def test_a_json_line_is_written_whatever_its_fields_hold() -> None:
    from pathlib import Path

    record = _record("x", fields={"big": 2**70, "path": Path("/tmp/a"), "map": {1: "one"}})
    line = json.loads(JsonFormatter().format(record))
    assert (line["big"], line["path"], line["map"]) == (2**70, "/tmp/a", {"1": "one"})
    record = _record("x", fields={"text": "é\u2028\x00", "ratio": 0.25})
    line = json.loads(JsonFormatter().format(record))
    assert (line["text"], line["ratio"]) == ("é\u2028\x00", 0.25)


def test_uvicorn_s_own_lines_come_out_as_ours_with_the_request_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from glimpse.ops.logs import setup_logging

    root = logging.getLogger()
    uvicorn_error = logging.getLogger("uvicorn.error")
    # (setup_logging changes the process's logging: put back what the test run had.)
    for target, name in (
        (root, "handlers"),
        (uvicorn_error, "handlers"),
        (uvicorn_error, "propagate"),
        (logging, "_srcfile"),
        (logging, "logThreads"),
        (logging, "logMultiprocessing"),
    ):
        value = getattr(target, name)
        monkeypatch.setattr(target, name, list(value) if isinstance(value, list) else value)
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    uvicorn_error.addHandler(logging.StreamHandler(io.StringIO()))  # (its own, as dictConfig)
    uvicorn_error.propagate = False
    level = root.level
    setup_logging("json")
    token = REQUEST_ID.set("abc123")
    try:
        uvicorn_error.warning("Invalid HTTP request received.")
    finally:
        REQUEST_ID.reset(token)
        root.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(x["logger"], x["message"], x.get("request_id")) for x in lines] == [
        ("uvicorn.error", "Invalid HTTP request received.", "abc123")
    ]


def test_a_text_line_escapes_what_a_client_could_use_to_forge_or_redraw_lines() -> None:
    # A request's path as api/errors.py logs it: percent-decoded, so whatever a client sends.
    path = "/api/v1/users/b\x1b[2K\x1b[1GFORGED\nline\r\x85\u2028\x7f"
    record = _record("unavailable for GET %s: refused", path, fields={"path": path})
    text = TextFormatter().format(record)
    assert "\n" not in text and "\x1b" not in text and "\x85" not in text
    assert len(text.splitlines()) == 1  # (splitlines also breaks on \x85 and \u2028)
    assert "b\\x1b[2K\\x1b[1GFORGED\\nline\\r\\x85\\u2028\\x7f" in text


def test_a_text_line_keeps_its_traceback_on_lines_of_its_own() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = _record("failed")
        record.exc_info = sys.exc_info()
    text = TextFormatter().format(record)
    assert text.splitlines()[0].endswith("failed") and "ValueError: boom" in text.splitlines()[-1]
