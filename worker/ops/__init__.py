"""What operators see of a running worker: Prometheus metrics, health and readiness over HTTP,
and OpenTelemetry traces. Everything here observes the worker through its seams
(worker.runtime.observer, worker.llm.observer, worker.runtime.tracing) and changes nothing it
does."""
