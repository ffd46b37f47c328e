"""How every process logs: `--log-format text|json`, and the record a log line is about.

`text` (the default) is one line for a person: `time LEVEL logger: message`. `json` is one object
a line for a log pipeline (python-json-logger, encoded by orjson): `time` (ISO 8601, UTC),
`level`, `logger`, `message`; `topic`, `partition` and `offset` when the line is about a Kafka
record; `exc_info` (the traceback as one string) when there is one. Both go to stderr.

A log call about a record passes its coordinates as `extra=at_record(record)`: a text line names
the record in its message already (`topic[partition]@offset`), a JSON line gets the three fields.
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import Protocol, TypedDict

from pythonjsonlogger.orjson import OrjsonFormatter

from worker.kafka.connect_errors import capture_connect_failures

LOG_FORMATS = ("text", "json")
DEFAULT_LOG_FORMAT = "text"
LOG_FORMAT_VARIABLE = "COEXISTENCE_ROUTER_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class KafkaRecord(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


class RecordCoordinates(TypedDict):
    topic: str
    partition: int
    offset: int


def at_record(record: KafkaRecord) -> RecordCoordinates:
    """`extra=` of a log call about `record` (a consumed record, or anything with the three)."""
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return OrjsonFormatter(
            ["levelname", "name", "message"],
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
        )
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")


def configure_logging(level: str, log_format: str = DEFAULT_LOG_FORMAT) -> None:
    """The root logger of this process: one stderr handler with the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka's INFO is chatty (every coordinator and metadata step); its warnings matter.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    capture_connect_failures()
    if log_format == "json":
        # A crash is one JSON line too (with exc_info), not a bare traceback.
        sys.excepthook = _log_uncaught


def _log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    logging.getLogger("worker").critical(
        "uncaught %s: %s", kind.__name__, error, exc_info=(kind, error, traceback)
    )
