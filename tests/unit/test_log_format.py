"""`--log-format text|json`: what one line holds, and how a log call names its record.

A real `run` process logging JSON: tests/integration/test_logs.py.
"""

from __future__ import annotations

import datetime
import logging
import sys
from collections.abc import Iterator

import orjson
import pytest
from aiokafka import ConsumerRecord

from worker.cli import _parser
from worker.logs import at_record, configure_logging, formatter


def record_of(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.getLogger("worker.runtime.publisher").makeRecord(
        "worker.runtime.publisher", logging.WARNING, __file__, 1, message, args, None
    )
    record.__dict__.update(extra)
    return record


def consumed(topic: str, partition: int, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic, partition, offset, 0, 0, b"k", b"v", None, 1, 1, headers=[])


def test_a_json_line_has_time_level_logger_message_and_the_record() -> None:
    record = record_of(
        "dead-lettered %s: %s", "in[2]@7", "bad json", **at_record(consumed("in", 2, 7))
    )
    line = formatter("json").format(record)
    assert "\n" not in line
    assert orjson.loads(line) == {
        "level": "WARNING",
        "logger": "worker.runtime.publisher",
        "message": "dead-lettered in[2]@7: bad json",
        "topic": "in",
        "partition": 2,
        "offset": 7,
        "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
    }


def test_a_json_line_without_a_record_has_no_record_fields() -> None:
    fields = orjson.loads(formatter("json").format(record_of("connected to kafka at %s", "b:1")))
    assert set(fields) == {"time", "level", "logger", "message"}


def test_a_traceback_stays_inside_its_json_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed to route %s", ("in[0]@1",), sys.exc_info()
        )
    line = formatter("json").format(record)
    assert "\n" not in line
    fields = orjson.loads(line)
    assert fields["message"] == "failed to route in[0]@1"
    assert "RuntimeError: boom" in fields["exc_info"]


def test_text_lines_are_as_before() -> None:
    line = formatter("text").format(record_of("dead-lettered %s", "in[2]@7"))
    assert line.endswith(" WARNING worker.runtime.publisher: dead-lettered in[2]@7")


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text, json"):
        formatter("xml")


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_configure_logging_puts_one_handler_on_the_root(root_logging: None) -> None:
    configure_logging("debug", "json")
    root = logging.getLogger()
    [handler] = root.handlers
    assert root.level == logging.DEBUG
    assert handler.formatter is not None
    assert orjson.loads(handler.formatter.format(record_of("x")))["message"] == "x"
    assert logging.getLogger("aiokafka").level == logging.WARNING


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-format", "json", "validate", "--config", "c", "--endpoints", "e"],
        ["validate", "--log-format", "json", "--config", "c", "--endpoints", "e"],
    ],
)
def test_log_format_before_or_after_the_command(argv: list[str]) -> None:
    assert _parser().parse_args(argv).log_format == "json"


def test_log_format_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COEXISTENCE_ROUTER_LOG_FORMAT", "json")
    assert _parser().parse_args(["demo"]).log_format == "json"
    assert _parser().parse_args(["demo", "--log-format", "text"]).log_format == "text"
    monkeypatch.delenv("COEXISTENCE_ROUTER_LOG_FORMAT")
    assert _parser().parse_args(["demo"]).log_format == "text"


def test_in_json_a_crash_is_one_line_too(
    root_logging: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # restored after the test
    configure_logging("info", "json")
    try:
        raise KeyError("v")
    except KeyError as error:
        sys.excepthook(KeyError, error, error.__traceback__)
    [line] = capsys.readouterr().err.splitlines()
    fields = orjson.loads(line)
    assert fields["level"] == "CRITICAL" and fields["message"] == "uncaught KeyError: 'v'"
    assert "Traceback" in fields["exc_info"]
