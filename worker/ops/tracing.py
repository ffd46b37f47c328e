"""Whether to trace, read from the standard `OTEL_*` variables without importing OpenTelemetry.

Tracing is on when the `otel` extra is installed and the environment asks for traces:
`OTEL_TRACES_EXPORTER` names an exporter other than `none`, or an OTLP endpoint is set
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); `OTEL_SDK_DISABLED=true`
turns it off. Off, nothing of OpenTelemetry is imported and the runtime gets no tracer, so
tracing costs nothing. On, worker.ops.otel builds the tracer (every other `OTEL_*` variable is
read by the OpenTelemetry SDK itself).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.ops.otel import Tracing

log = logging.getLogger(__name__)

EXTRA_HINT = "pip install 'coexistence-router[otel]'"


def tracing_requested(environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return any(name.strip() not in ("", "none") for name in exporters.split(","))
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def tracing_from_environment(environ: Mapping[str, str], service: str) -> Tracing | None:
    """The tracer the environment asks for, or None (then a warning says why, if it asked)."""
    if not tracing_requested(environ):
        return None
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        log.warning(
            "tracing: OTEL_* variables ask for traces, but the otel extra is not installed "
            "(%s); running without tracing",
            EXTRA_HINT,
        )
        return None
    from worker.ops.otel import Tracing

    return Tracing.from_environment(environ, service)
