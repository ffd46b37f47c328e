"""Balancing strategies: seeded, pure choices over candidates and a usage snapshot."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from worker.llm.model_group import Deployment, RouterSettings
from worker.llm.prices import price_table
from worker.llm.strategies import (
    Candidate,
    DeploymentUsage,
    cost_based,
    latency_based,
    least_busy,
    lowest_latency_buffer,
    shuffle_weights,
    simple_shuffle,
    strategy_for,
    token_cost,
    usage_based,
    within_limits,
)


def candidate(name: str, **keys: Any) -> Candidate:
    return Candidate(name, Deployment(provider="openai", model=name, **keys))


def tally(strategy: Any, candidates: list[Candidate], usage: Any, n: int = 3000) -> Counter[str]:
    rng = random.Random(7)
    picks: Counter[str] = Counter()
    for _ in range(n):
        choice = strategy(candidates, usage, rng)
        assert choice is not None
        picks[choice.key] += 1
    return picks


def test_simple_shuffle_follows_weights() -> None:
    picks = tally(simple_shuffle, [candidate("a", weight=1), candidate("b", weight=2)], {})
    assert picks["a"] / 3000 == pytest.approx(1 / 3, abs=0.03)
    assert picks["b"] / 3000 == pytest.approx(2 / 3, abs=0.03)


def test_simple_shuffle_draws_exactly_as_random_choices() -> None:
    # The same seeded rng gives the same picks as random.choices with the weights, whether the
    # candidates come as the group's tuple (cached by identity) or as a list.
    group = (candidate("a", weight=1), candidate("b", weight=2), candidate("c", weight=3.5))
    for candidates in (group, list(group)):
        ours, reference = random.Random(11), random.Random(11)
        for _ in range(2000):
            expected = reference.choices(group, weights=[1, 2, 3.5], k=1)[0]
            assert simple_shuffle(candidates, {}, ours) is expected


def test_simple_shuffle_refuses_weights_that_add_up_to_infinity() -> None:
    with pytest.raises(ValueError, match="finite"):
        simple_shuffle([candidate("a", weight=float("inf")), candidate("b")], {}, random.Random(1))


def test_simple_shuffle_falls_back_to_rpm_then_tpm_then_uniform() -> None:
    by_rpm = tally(simple_shuffle, [candidate("a", rpm=100), candidate("b", rpm=300)], {})
    assert by_rpm["b"] / 3000 == pytest.approx(0.75, abs=0.03)
    by_tpm = tally(simple_shuffle, [candidate("a", tpm=1000), candidate("b", tpm=1000)], {})
    assert by_tpm["a"] / 3000 == pytest.approx(0.5, abs=0.03)
    uniform = tally(simple_shuffle, [candidate("a"), candidate("b"), candidate("c")], {})
    assert all(count / 3000 == pytest.approx(1 / 3, abs=0.03) for count in uniform.values())


def test_mixed_weights_use_the_first_key_any_candidate_sets() -> None:
    # SPEC §5's example: azure with rpm only, openai with weight 2 → weight wins, azure counts 1.
    assert shuffle_weights([candidate("azure", rpm=600), candidate("openai", weight=2)]) == [1, 2]
    # rpm present on one only: the other gets the mean of the given rpms.
    assert shuffle_weights([candidate("a", rpm=100), candidate("b"), candidate("c", rpm=300)]) == [
        100,
        200,
        300,
    ]


def test_least_busy_picks_fewest_in_flight_and_breaks_ties_randomly() -> None:
    candidates = [candidate("a"), candidate("b"), candidate("c")]
    usage = {"a": DeploymentUsage(in_flight=3), "b": DeploymentUsage(in_flight=1)}
    assert set(tally(least_busy, candidates, usage, 200)) == {"c"}  # no entry: idle
    usage["c"] = DeploymentUsage(in_flight=1)
    assert set(tally(least_busy, candidates, usage, 200)) == {"b", "c"}
    usage = {k: DeploymentUsage(in_flight=2) for k in "abc"}
    picks = tally(least_busy, candidates, usage)
    assert all(count / 3000 == pytest.approx(1 / 3, abs=0.03) for count in picks.values())


def test_latency_based_tries_unmeasured_first_then_the_fastest_within_buffer() -> None:
    candidates = [candidate("fast"), candidate("ok"), candidate("slow")]
    usage = {"fast": DeploymentUsage(latency=0.10), "ok": DeploymentUsage(latency=0.14)}
    assert set(tally(latency_based(0.0), candidates, usage, 100)) == {"slow"}
    usage["slow"] = DeploymentUsage(latency=1.0)
    assert set(tally(latency_based(0.0), candidates, usage, 100)) == {"fast"}
    spread = tally(latency_based(0.5), candidates, usage)
    assert set(spread) == {"fast", "ok"}
    assert spread["fast"] / 3000 == pytest.approx(0.5, abs=0.04)


def test_latency_based_leaves_a_deployment_being_probed_to_its_probe() -> None:
    candidates = [candidate("fast"), candidate("aged")]
    probed = {"fast": DeploymentUsage(latency=0.1), "aged": DeploymentUsage(probing=True)}
    assert set(tally(latency_based(0.0), candidates, probed, 200)) == {"fast"}
    # Not being probed: the next call is its probe.
    waiting = {"fast": DeploymentUsage(latency=0.1), "aged": DeploymentUsage()}
    assert set(tally(latency_based(0.0), candidates, waiting, 100)) == {"aged"}


def test_latency_based_spreads_when_every_deployment_is_being_probed() -> None:
    # The first calls after a start: nothing is known of any deployment, each has its probe.
    candidates = [candidate("a"), candidate("b"), candidate("c")]
    usage = {k: DeploymentUsage(probing=True) for k in "abc"}
    picks = tally(latency_based(0.0), candidates, usage)
    assert all(count / 3000 == pytest.approx(1 / 3, abs=0.03) for count in picks.values())
    # One of them not probed yet: that one is probed first.
    usage["c"] = DeploymentUsage()
    assert set(tally(latency_based(0.0), candidates, usage, 100)) == {"c"}


def test_latency_based_ranks_a_failing_deployment_behind_every_healthy_one() -> None:
    candidates = [candidate("failed-fast"), candidate("slow"), candidate("slower")]
    usage = {
        # A fast 5xx: quicker than any answer, but a failure in the window.
        "failed-fast": DeploymentUsage(latency=0.002, failures=1),
        "slow": DeploymentUsage(latency=2.0),
        "slower": DeploymentUsage(latency=2.5),
    }
    assert set(tally(latency_based(0.0), candidates, usage, 200)) == {"slow"}
    # The buffer applies among the healthy ones only.
    assert set(tally(latency_based(0.3), candidates, usage)) == {"slow", "slower"}
    # Everything failing: the fewest failures first, then the latency.
    usage["slow"] = DeploymentUsage(latency=2.0, failures=2)
    usage["slower"] = DeploymentUsage(latency=2.5, failures=1)
    assert set(tally(latency_based(0.0), candidates, usage, 200)) == {"failed-fast"}


def test_latency_buffer_is_read_from_routing_strategy_args() -> None:
    # litellm's place for it (router_strategy/lowest_latency.py); a top-level router key of that
    # name is refused, as litellm's Router refuses it (worker.config.router_settings).
    assert lowest_latency_buffer(RouterSettings()) == 0.0
    settings = RouterSettings(routing_strategy_args={"lowest_latency_buffer": 0.5})
    assert lowest_latency_buffer(settings) == 0.5


def test_usage_based_skips_deployments_at_their_limits_and_prefers_lowest_usage() -> None:
    candidates = [candidate("a", rpm=10), candidate("b", tpm=500), candidate("c")]
    usage = {
        "a": DeploymentUsage(rpm=10),
        "b": DeploymentUsage(rpm=1, tpm=500),
        "c": DeploymentUsage(rpm=50, tpm=900),
    }
    assert set(tally(usage_based, candidates, usage, 100)) == {"c"}
    usage = {"a": DeploymentUsage(rpm=3, tpm=30), "b": DeploymentUsage(rpm=2, tpm=30)}
    assert set(tally(usage_based, candidates[:2], usage, 100)) == {"b"}  # equal tokens → requests
    full = {"a": DeploymentUsage(rpm=10), "b": DeploymentUsage(tpm=600)}
    assert usage_based(candidates[:2], full, random.Random(0)) is None


def test_within_limits_counts_the_requests_own_input_tokens() -> None:
    # litellm's usage-based-routing (lowest_tpm_rpm.py, 1.69.3-1.101) skips a deployment when
    # `tpm_used + input_tokens > tpm`.
    candidates = [candidate("a", tpm=100), candidate("b", rpm=5), candidate("c")]
    usage = {"a": DeploymentUsage(tpm=90), "b": DeploymentUsage(rpm=4, tpm=10_000)}
    assert [c.key for c in within_limits(candidates, usage, 10)] == ["a", "b", "c"]
    assert [c.key for c in within_limits(candidates, usage, 11)] == ["b", "c"]
    usage["b"] = DeploymentUsage(rpm=5)
    assert [c.key for c in within_limits(candidates, usage, 0)] == ["a", "c"]
    assert within_limits([candidates[0]], {"a": DeploymentUsage(tpm=100)}, 0) == []


def test_usage_based_spreads_evenly_when_usage_is_counted() -> None:
    candidates = [candidate("a", rpm=6), candidate("b", rpm=6)]
    counts: Counter[str] = Counter()
    rng = random.Random(3)
    for _ in range(12):
        usage = {k: DeploymentUsage(rpm=counts[k]) for k in "ab"}
        choice = usage_based(candidates, usage, rng)
        assert choice is not None
        counts[choice.key] += 1
    assert counts == {"a": 6, "b": 6}
    usage = {k: DeploymentUsage(rpm=counts[k]) for k in "ab"}
    assert usage_based(candidates, usage, rng) is None


def test_cost_based_picks_cheapest_and_randomises_equal_prices() -> None:
    candidates = [
        candidate("dear", input_cost_per_token=3e-6, output_cost_per_token=6e-6),
        candidate("cheap1", input_cost_per_token=1e-6, output_cost_per_token=2e-6),
        candidate("cheap2", input_cost_per_token=1.5e-6, output_cost_per_token=1.5e-6),
        candidate("unpriced"),
    ]
    picks = tally(cost_based, candidates, {})
    assert set(picks) == {"cheap1", "cheap2"}
    assert picks["cheap1"] / 3000 == pytest.approx(0.5, abs=0.04)
    assert token_cost(candidates[3].deployment) == float("inf")
    only_output = candidate("x", output_cost_per_token=1e-6)
    assert token_cost(only_output.deployment) == 1e-6


def test_cost_based_prices_known_models_from_the_table() -> None:
    # No prices written: gpt-4o-mini is cheaper than gpt-4o by the table (litellm's).
    candidates = [candidate("gpt-4o"), candidate("gpt-4o-mini")]
    assert set(tally(cost_based, candidates, {}, 100)) == {"gpt-4o-mini"}
    table = price_table().prices
    assert token_cost(candidates[1].deployment) == pytest.approx(sum(table["gpt-4o-mini"]))


def test_cost_based_explicit_prices_win_over_the_table() -> None:
    cheap_4o = candidate("gpt-4o", input_cost_per_token=1e-9, output_cost_per_token=1e-9)
    assert set(tally(cost_based, [cheap_4o, candidate("gpt-4o-mini")], {}, 100)) == {"gpt-4o"}
    # An explicit 0 is a price (litellm would ignore it as unset): free beats everything.
    free = candidate("gpt-4o", input_cost_per_token=0.0, output_cost_per_token=0.0)
    assert set(tally(cost_based, [candidate("gpt-4o-mini"), free], {}, 100)) == {"gpt-4o"}
    # One half written: the other half from the table.
    half = candidate("gpt-4o", input_cost_per_token=1e-9)
    assert token_cost(half.deployment) == pytest.approx(1e-9 + price_table().prices["gpt-4o"][1])


def test_cost_based_ranks_unpriced_deployments_after_priced_ones() -> None:
    own = Deployment(provider="self-hosted", model="our-llama", api_base="http://gpu:8000/v1")
    unpriced = [Candidate("own", own), candidate("not-in-any-table")]
    dearest = candidate("gpt-4", input_cost_per_token=1.0, output_cost_per_token=1.0)
    assert set(tally(cost_based, [*unpriced, dearest], {}, 200)) == {"gpt-4"}
    # Among the unpriced ones only: random, neither counts as free.
    picks = tally(cost_based, unpriced, {})
    assert picks["own"] / 3000 == pytest.approx(0.5, abs=0.04)


def test_a_candidates_cost_is_computed_once() -> None:
    c = candidate("gpt-4o-mini")
    assert c.cost is c.cost
    assert c.cost == token_cost(c.deployment)


def test_strategies_are_reproducible_with_a_seed() -> None:
    candidates = [candidate("a", weight=1), candidate("b", weight=3)]
    first = [simple_shuffle(candidates, {}, r) for r in [random.Random(11)] for _ in range(50)]
    rng = random.Random(11)
    second = [simple_shuffle(candidates, {}, rng) for _ in range(50)]
    assert [c.key for c in first if c] == [c.key for c in second if c]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("simple-shuffle", simple_shuffle),
        ("least-busy", least_busy),
        ("usage-based-routing", usage_based),
        ("cost-based-routing", cost_based),
    ],
)
def test_strategy_for_names(name: str, expected: Any) -> None:
    assert strategy_for(RouterSettings(routing_strategy=name)) is expected


def test_empty_candidates_pick_nothing() -> None:
    rng = random.Random(0)
    for strategy in (simple_shuffle, least_busy, latency_based(0.1), usage_based, cost_based):
        assert strategy([], {}, rng) is None
