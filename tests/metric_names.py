"""The metric names and label sets SPEC §8 requires: what the scrape tests, the dashboard's
queries and the unit tests of the metrics are checked against."""

SPEC_COUNTERS_AND_GAUGES = {
    "coexistence_router_decisions_total": {"router", "route", "reason"},
    "coexistence_router_dead_letters_total": {"error_type"},
    "coexistence_router_llm_requests_total": {"model_group", "deployment", "outcome"},
    "coexistence_router_deployment_cooling_down": {"model_group", "deployment"},
    "coexistence_router_sessions": {"partition"},
    "coexistence_router_consumer_lag": {"partition"},
    "coexistence_router_messages_in_flight": set(),
}
SPEC_HISTOGRAMS = {
    "coexistence_router_llm_request_duration_seconds": {"model_group", "deployment"},
    "coexistence_router_restore_duration_seconds": set(),
}
