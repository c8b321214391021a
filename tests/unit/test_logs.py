"""JSON log lines, and exception texts kept out of them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from services.common.logs import ALLOW_EXC_TEXT, configure_logging

FAKE_EMAIL = "anna.virtanen@example.com"


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    buffer = io.StringIO()
    configure_logging("records", "DEBUG", stream=buffer)
    yield buffer
    for handler in list(root.handlers):
        if handler not in saved_handlers:
            root.removeHandler(handler)
    root.setLevel(saved_level)


def _lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def _fail() -> None:
    raise ValueError(f"invalid address {FAKE_EMAIL}")


def test_a_record_is_one_json_line_with_whitelisted_extras(out: io.StringIO) -> None:
    logging.getLogger("services.records.handlers").info(
        "customer %s registered",
        "C-1001",
        extra={
            "customer_id": "C-1001",
            "topic": "records.commands.v1",
            "offset": 42,
            "email": FAKE_EMAIL,
        },
    )
    [line] = _lines(out)
    assert line["level"] == "INFO"
    assert line["service"] == "records"
    assert line["logger"] == "services.records.handlers"
    assert line["msg"] == "customer C-1001 registered"
    assert line["customer_id"] == "C-1001"
    assert line["topic"] == "records.commands.v1"
    assert line["offset"] == 42
    assert line["ts"].endswith("+00:00")
    assert "email" not in line
    assert FAKE_EMAIL not in out.getvalue()


def test_exception_text_never_reaches_the_output(out: io.StringIO) -> None:
    log = logging.getLogger("services.records.handlers")
    try:
        _fail()
    except ValueError as exc:
        log.exception("registration failed")
        log.warning("registration failed: %s", exc)
        # FastStream's own error line puts the text in the message and passes exc_info.
        text = f"ValueError: {exc}"
        logging.getLogger("rekisteri.faststream.records").error(text, exc_info=exc)  # noqa: TRY400
    lines = _lines(out)
    assert len(lines) == 3
    assert FAKE_EMAIL not in out.getvalue()
    assert lines[0]["msg"] == "registration failed"
    assert lines[0]["exc_type"] == "ValueError"
    assert "_fail" in lines[0]["exc_stack"]
    assert lines[1]["msg"] == "registration failed: ValueError"
    assert lines[2]["msg"] == "ValueError: <redacted>"


def _unreachable() -> None:
    raise ConnectionError("broker 10.0.0.5:9092 unreachable")


def test_exception_text_can_be_allowed_explicitly(out: io.StringIO) -> None:
    try:
        _unreachable()
    except ConnectionError:
        logging.getLogger("services.common.db").exception("connect failed", extra=ALLOW_EXC_TEXT)
    [line] = _lines(out)
    assert line["exc_type"] == "ConnectionError"
    assert "10.0.0.5:9092 unreachable" in line["exc"]


def test_configure_logging_is_idempotent(out: io.StringIO) -> None:
    configure_logging("records", "INFO", stream=out)
    logging.getLogger("services.x").info("once")
    logging.getLogger("services.x").debug("not at INFO")
    assert [line["msg"] for line in _lines(out)] == ["once"]
