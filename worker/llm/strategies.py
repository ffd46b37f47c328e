"""Balancing strategies (SPEC §5): given the healthy candidates, a usage snapshot and a seeded
`random.Random`, pick one deployment. No I/O and no clock, so every choice is reproducible.

Semantics (litellm Router's, with its gaps closed):

- simple-shuffle: random, weighted. The weighting key is the first of `weight`, `rpm`, `tpm` that
  any candidate sets; a candidate without that key counts as weight 1 (for `weight`, the natural
  unit) or as the mean of the others' values (for `rpm`/`tpm`, which have no unit). litellm gives
  such a candidate weight 0 instead, i.e. never picks it. No key anywhere: uniform.
- least-busy: fewest calls in flight, random among ties.
- latency-based-routing: a deployment without a recent measurement first, but only one call at a
  time probes it (a deployment another call is probing is left to that call); then the fewest
  failed attempts in the window (a failure is a penalty: a failing deployment ranks behind every
  healthy one while its window holds the failure), then random among those whose recent latency
  is within `lowest_latency_buffer` (a fraction: 0.5 = up to 50 % slower than the best) of the
  best. When every deployment is unmeasured and already being probed (the first calls after a
  start), random.
- usage-based-routing: candidates at their `rpm` or `tpm` limit for the current minute are
  skipped (`within_limits` also skips those the request's own input tokens would take past
  `tpm`); then the lowest tokens used this minute, then the fewest requests, random among ties.
  None when every candidate is at a limit.
- cost-based-routing: cheapest `input_cost_per_token + output_cost_per_token`, random among ties.
  A deployment's own prices win, else the price table's for its model (worker.llm.prices), a half
  known to neither counts 0; a deployment priced by neither is unpriced: after every priced one.
"""

from __future__ import annotations

import math
import random
from bisect import bisect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import accumulate

from worker.llm.model_group import Deployment, RouterSettings
from worker.llm.prices import deployment_prices


@dataclass(frozen=True)
class Candidate:
    """A deployment with its stable, secret-free identity (used in shared-state keys)."""

    key: str
    deployment: Deployment

    @property
    def name(self) -> str:
        return self.deployment.name

    @cached_property
    def cost(self) -> float:
        """Price per input plus output token (math.inf when unpriced); computed once."""
        return token_cost(self.deployment)


@dataclass(frozen=True)
class DeploymentUsage:
    in_flight: int = 0
    rpm: int = 0  # requests started in the current minute
    tpm: int = 0  # tokens used in the current minute
    latency: float | None = None  # recent latency in seconds; None = not measured recently
    failures: int = 0  # failed attempts among the recent latency samples
    probing: bool = False  # unmeasured, and a call is probing it now


UsageSnapshot = Mapping[str, DeploymentUsage]
Strategy = Callable[[Sequence[Candidate], UsageSnapshot, random.Random], Candidate | None]

_IDLE = DeploymentUsage()


def _usage(usage: UsageSnapshot, candidate: Candidate) -> DeploymentUsage:
    return usage.get(candidate.key, _IDLE)


def _lowest(
    candidates: Sequence[Candidate],
    score: Callable[[Candidate], tuple[float, ...]],
    rng: random.Random,
) -> Candidate | None:
    if not candidates:
        return None
    scores = [score(c) for c in candidates]
    best = min(scores)
    return rng.choice([c for c, s in zip(candidates, scores, strict=True) if s == best])


def shuffle_weights(candidates: Sequence[Candidate]) -> list[float]:
    for attribute in ("weight", "rpm", "tpm"):
        given = [getattr(c.deployment, attribute) for c in candidates]
        present = [float(v) for v in given if v is not None]
        if present:
            missing = 1.0 if attribute == "weight" else sum(present) / len(present)
            return [float(v) if v is not None else missing for v in given]
    return [1.0] * len(candidates)


# (candidates, their cumulative weights) by the candidates' identities. The entry holds the
# candidates themselves, so an id in a key cannot be reused while the entry exists. Candidates
# are immutable; a gateway passes the same few lists (all, or all minus the tried ones).
_WEIGHTS: dict[int | tuple[int, ...], tuple[tuple[Candidate, ...], list[float]]] = {}
_WEIGHTS_MAX = 256


def _cached_weights(candidates: Sequence[Candidate]) -> tuple[tuple[Candidate, ...], list[float]]:
    # A tuple (a gateway's whole group) is immutable: its own identity is the key.
    key: int | tuple[int, ...] = (
        id(candidates) if type(candidates) is tuple else tuple(map(id, candidates))
    )
    hit = _WEIGHTS.get(key)
    if hit is None:
        if len(_WEIGHTS) >= _WEIGHTS_MAX:
            _WEIGHTS.clear()
        # Cumulative, as random.choices would accumulate them on every call: the same picks.
        hit = _WEIGHTS[key] = (tuple(candidates), list(accumulate(shuffle_weights(candidates))))
    return hit


def simple_shuffle(
    candidates: Sequence[Candidate], usage: UsageSnapshot, rng: random.Random
) -> Candidate | None:
    if not candidates:
        return None
    population, cumulative = _cached_weights(candidates)
    total = cumulative[-1] + 0.0
    if not 0.0 < total < math.inf:
        return rng.choices(population, cum_weights=cumulative, k=1)[0]  # its ValueError
    # random.choices(k=1) without its list and checks: the same draw, the same pick.
    return population[bisect(cumulative, rng.random() * total, 0, len(population) - 1)]


def least_busy(
    candidates: Sequence[Candidate], usage: UsageSnapshot, rng: random.Random
) -> Candidate | None:
    return _lowest(candidates, lambda c: (_usage(usage, c).in_flight,), rng)


def latency_based(buffer: float) -> Strategy:
    def pick(
        candidates: Sequence[Candidate], usage: UsageSnapshot, rng: random.Random
    ) -> Candidate | None:
        if not candidates:
            return None
        # One pass to classify and find the best (fewest failures, then lowest latency), one
        # to collect those within the buffer: two small lists, as before this ranking.
        unmeasured: list[Candidate] = []
        measured = False
        fewest = 0
        best = 0.0
        for c in candidates:
            used = usage.get(c.key, _IDLE)
            latency = used.latency
            if latency is None:
                if not used.probing:
                    unmeasured.append(c)
            elif (
                not measured
                or used.failures < fewest
                or (used.failures == fewest and latency < best)
            ):
                measured, fewest, best = True, used.failures, latency
        if unmeasured:
            return rng.choice(unmeasured)  # this call probes it
        if not measured:
            return rng.choice(candidates)  # nothing known yet, and every one is being probed
        limit = best * (1.0 + buffer)
        near: list[Candidate] = []
        for c in candidates:
            used = usage.get(c.key, _IDLE)
            if used.latency is not None and used.failures == fewest and used.latency <= limit:
                near.append(c)
        return rng.choice(near)

    return pick


def tokens_fit(used: int, tokens: int, limit: int) -> bool:
    """Whether a request of `tokens` input tokens fits a `limit` of which `used` are used (as
    litellm's `tpm_used + input_tokens > tpm` test). At the limit nothing fits, not even a
    request of unknown size (0 tokens)."""
    return used < limit and used + tokens <= limit


def below_limits(candidate: Candidate, used: DeploymentUsage, tokens: int = 0) -> bool:
    deployment = candidate.deployment
    if deployment.rpm is not None and used.rpm >= deployment.rpm:
        return False
    return deployment.tpm is None or tokens_fit(used.tpm, tokens, deployment.tpm)


def within_limits(
    candidates: Sequence[Candidate], usage: UsageSnapshot, tokens: int
) -> list[Candidate]:
    """The candidates a request of `tokens` input tokens may still go to this minute."""
    return [c for c in candidates if below_limits(c, _usage(usage, c), tokens)]


def usage_based(
    candidates: Sequence[Candidate], usage: UsageSnapshot, rng: random.Random
) -> Candidate | None:
    open_ = [c for c in candidates if below_limits(c, _usage(usage, c))]
    if not open_:
        return None
    return _lowest(open_, lambda c: (_usage(usage, c).tpm, _usage(usage, c).rpm), rng)


def token_cost(deployment: Deployment) -> float:
    """`input_cost_per_token + output_cost_per_token` as cost-based-routing ranks it."""
    prices = deployment_prices(deployment)
    if prices is None:
        return math.inf
    # Rounded so equal prices written as different splits (1e-6 + 2e-6 vs 1.5e-6 + 1.5e-6) tie.
    return float(f"{sum(prices):.12g}")


def cost_based(
    candidates: Sequence[Candidate], usage: UsageSnapshot, rng: random.Random
) -> Candidate | None:
    if not candidates:
        return None
    best = min(c.cost for c in candidates)
    return rng.choice([c for c in candidates if c.cost == best])


def lowest_latency_buffer(settings: RouterSettings) -> float:
    """`routing_strategy_args.lowest_latency_buffer` (litellm's place for it), default 0."""
    given = settings.routing_strategy_args.get("lowest_latency_buffer")
    if isinstance(given, int | float) and not isinstance(given, bool) and given >= 0:
        return float(given)
    return 0.0


def strategy_for(settings: RouterSettings) -> Strategy:
    name = settings.routing_strategy
    if name == "least-busy":
        return least_busy
    if name == "latency-based-routing":
        return latency_based(lowest_latency_buffer(settings))
    if name == "usage-based-routing":
        return usage_based
    if name == "cost-based-routing":
        return cost_based
    return simple_shuffle
