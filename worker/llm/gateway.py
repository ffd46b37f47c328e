"""The model-group gateway: one completion call balanced over a group's deployments, with
cooldowns, retries on other deployments, and state shared through Redis when configured.

Call semantics (SPEC §5, litellm Router's keys):

- Attempts: the first plus up to `num_retries` more. Each retry goes to a healthy deployment this
  call has not tried yet; only when every healthy one has failed does the call back off (full
  jitter, 50 ms doubling, at most 1 s, `Retry-After` honoured up to that bound) and try them again.
- Per-attempt timeout: the deployment's `timeout`, else the router's `timeout`, else 7 s.
- Failures: 408, 429, 5xx, timeouts, connection errors and unreadable answers are retried and count
  towards cooldown. 401/403/404 mean the deployment itself is misconfigured: not retried (the call
  fails at once, as for other 4xx), but counted, so calls stop landing there. Other 4xx (400, 413,
  422…) are the request's fault: not retried, not counted.
- Cooldown: more than `allowed_fails` counted failures of a deployment within 60 s cool it down
  for `cooldown_time` seconds (litellm's comparison: `allowed_fails: 3` tolerates three). A 429
  cools it down at once, for `Retry-After` when longer than `cooldown_time`. A group of one
  deployment is never cooled down. With every deployment cooling down, a call fails at once with
  AllDeploymentsCoolingDown and makes no request.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from yarl import URL

from worker.llm.errors import (
    AllDeploymentsCoolingDown,
    AttemptError,
    AttemptsExhausted,
    GatewayError,
    RateLimitsReached,
    RequestRejected,
)
from worker.llm.http import HttpError, Target
from worker.llm.model_group import Deployment, ModelGroup
from worker.llm.observer import SUCCESS, AttemptObserver, outcome_of
from worker.llm.providers import Endpoint, ProviderAnswer, TokenUsage, error_text, parse_json
from worker.llm.redaction import Redactor, deployment_secrets
from worker.llm.router_defaults import ROUTER_TIMEOUT, router_params
from worker.llm.strategies import Candidate, strategy_for
from worker.llm.transport import Transport
from worker.llm.usage import (
    KEY_PREFIX,
    LatencyWindows,
    LocalUsage,
    RedisUsage,
    ResilientUsage,
    UsageStore,
    deployment_keys,
    redis_client,
    redis_location,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = ROUTER_TIMEOUT
BACKOFF_BASE = 0.05
BACKOFF_CAP = 1.0
MAX_RETRY_AFTER = 3600.0
IN_FLIGHT_GRACE = 1.0  # an in-flight entry outlives its call's timeout by this much at most

ParamsFor = Callable[[Deployment], Mapping[str, Any]]


@dataclass(frozen=True)
class Completion:
    text: str
    deployment: str
    attempts: int
    latency_ms: int  # the whole call: every attempt and backoff
    usage: TokenUsage


@dataclass(frozen=True)
class GroupState:
    """This worker's own state of a group, kept across hot reloads of the group's config."""

    local: LocalUsage
    latency: LatencyWindows


def group_state(group: ModelGroup) -> GroupState:
    args = group.settings.routing_strategy_args
    size = args.get("max_latency_list_size")
    ttl = args.get("ttl")
    return GroupState(
        LocalUsage(),
        LatencyWindows(
            size=size if isinstance(size, int) and size > 0 else 10,
            max_age=float(ttl) if isinstance(ttl, int | float) and ttl > 0 else 60.0,
        ),
    )


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms` (OpenAI/Azure) or `Retry-After` (seconds or an HTTP date), bounded."""
    value: float | None = None
    raw_ms = headers.get("retry-after-ms")
    raw = headers.get("Retry-After")
    try:
        if raw_ms is not None:
            value = float(raw_ms) / 1000.0
        elif raw is not None:
            value = float(raw)
    except ValueError:
        value = None
    if value is None and raw is not None:
        try:
            when = email.utils.parsedate_to_datetime(raw)
            value = when.timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            value = None
    if value is None or value != value:  # NaN
        return None
    return min(max(value, 0.0), MAX_RETRY_AFTER)


class ModelGroupGateway:
    """Completions from one model group, over its Transport (keep-alive connections per
    deployment, or a proxy; opened lazily, `close()` ends them)."""

    def __init__(
        self,
        group: ModelGroup,
        *,
        params: ParamsFor = router_params,
        rng: random.Random | None = None,
        key_prefix: str = KEY_PREFIX,
        state: GroupState | None = None,
        environ: Mapping[str, str] | None = None,
        observer: AttemptObserver | None = None,
    ) -> None:
        self.group = group
        self.group_id = group.id
        self.settings = group.settings
        self._rng = rng or random.Random()
        self._endpoints = {
            key: Endpoint(deployment, params(deployment), environ=environ)
            for key, deployment in zip(deployment_keys(group.models), group.models, strict=True)
        }
        # A tuple: the same immutable object on every call, so strategies may cache by it.
        self._candidates = tuple(Candidate(key, e.deployment) for key, e in self._endpoints.items())
        self._keys = [c.key for c in self._candidates]
        self._strategy = strategy_for(self.settings)
        self._counts_usage = self.settings.routing_strategy == "usage-based-routing"
        self._tracks_in_flight = self.settings.routing_strategy == "least-busy"
        self._uses_latency = self.settings.routing_strategy == "latency-based-routing"
        # Per deployment, built once: the parsed URL, the prepared target and the timeout.
        self._urls = {key: URL(e.url, encoded=True) for key, e in self._endpoints.items()}
        self._targets: dict[str, Target] = {}
        for key, url in self._urls.items():
            try:
                self._targets[key] = Target(url)
            except ValueError:
                name = self._endpoints[key].name
                raise ValueError(f"deployment {name!r}: api_base must be an http(s) URL") from None
        self._timeouts = {key: self._timeout(e.deployment) for key, e in self._endpoints.items()}
        # TLS trust, proxies and netrc credentials, read from the environment now.
        try:
            self._transport = Transport(self._targets, environ)
        except ValueError as exc:
            raise ValueError(f"model group {group.id!r}: {exc}") from None
        secrets = [s for d in group.models for s in deployment_secrets(d)]
        secrets.extend(self._transport.secrets)
        if self.settings.redis_password is not None:
            secrets.append(self.settings.redis_password.get_secret_value())
        self._redact = Redactor(secrets)
        state = state or group_state(group)
        self._latency = state.latency
        self.store: UsageStore = state.local
        client = redis_client(self.settings)
        if client is not None:
            self.store = ResilientUsage(
                RedisUsage(client, group.id, prefix=key_prefix),
                state.local,
                group=group.id,
                location=redis_location(self.settings),
                redactor=self._redact,
            )
        self._observer = observer or AttemptObserver()  # metrics and traces (llm/observer.py)
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._retired = False

    def __repr__(self) -> str:
        names = ", ".join(c.name for c in self._candidates)
        return f"ModelGroupGateway({self.group_id!r}, {self.settings.routing_strategy}, [{names}])"

    async def __aenter__(self) -> ModelGroupGateway:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        """Retired and without open HTTP connections."""
        return self._retired and self._transport.closed

    @property
    def in_flight(self) -> int:
        """Calls of `complete` running now."""
        return self._active

    async def cooling_down(self) -> dict[str, bool]:
        """Per deployment name: whether it is cooling down now (in the shared state, when
        the group has one)."""
        cooling = (await self.store.snapshot(self._keys)).cooling
        state: dict[str, bool] = {}
        for candidate in self._candidates:
            state[candidate.name] = state.get(candidate.name, False) or candidate.key in cooling
        return state

    @property
    def deployment_keys(self) -> dict[str, str]:
        """Shared-state key of each deployment, by deployment name."""
        return {c.name: c.key for c in self._candidates}

    async def complete(self, prompt: str) -> Completion:
        """One completion of `prompt` (sent as one user message); GatewayError when none."""
        started = time.monotonic()
        self._active += 1
        self._idle.clear()
        try:
            return await self._complete(prompt, started)
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()
                if self._retired:
                    await self._release()

    async def _complete(self, prompt: str, started: float) -> Completion:
        settings = self.settings
        max_attempts = 1 + settings.num_retries
        single = len(self._candidates) == 1
        attempts = 0
        rounds = 0
        tried: set[str] = set()
        last: AttemptError | None = None
        last_name: str | None = None

        def failure(kind: type[GatewayError], message: str) -> GatewayError:
            return kind(
                message,
                group=self.group_id,
                attempts=attempts,
                last_error=last.description if last else None,
                deployment=last_name,
            )

        while attempts < max_attempts:
            snapshot = await self.store.snapshot(self._keys)
            cooling = snapshot.cooling
            healthy: Sequence[Candidate] = (
                self._candidates
                if single or not cooling
                else [c for c in self._candidates if c.key not in cooling]
            )
            if not healthy:
                raise failure(AllDeploymentsCoolingDown, "every deployment is cooling down")
            fresh = [c for c in healthy if c.key not in tried] if tried else healthy
            if not fresh:
                # Every healthy deployment already failed this call: wait a little, then
                # start over among them (re-reading health after the wait).
                await asyncio.sleep(self._backoff(rounds, last))
                rounds += 1
                tried.clear()
                continue
            usage: Mapping[str, Any] = snapshot.usage
            if self._uses_latency:
                usage = {
                    key: replace(value, latency=self._latency.recent(key))
                    for key, value in snapshot.usage.items()
                }
            choice = await self._choose(fresh, usage)
            if choice is None:
                raise failure(RateLimitsReached, "every deployment is at its rpm/tpm limit")
            attempts += 1
            tried.add(choice.key)
            last_name = choice.name
            sent = time.monotonic()
            try:
                answer = await self._attempt(choice, prompt)
            except AttemptError as error:
                self._observer.attempt(
                    self.group_id, choice.name, outcome_of(error), time.monotonic() - sent
                )
                last = error
                log.info(
                    "model group %r: deployment %r failed (attempt %d of %d): %s",
                    self.group_id,
                    choice.name,
                    attempts,
                    max_attempts,
                    error.description,
                )
                if not single:
                    await self._note_failure(choice, error)
                if not error.retryable:
                    raise failure(RequestRejected, "the request was refused") from None
                continue
            self._observer.attempt(self.group_id, choice.name, SUCCESS, time.monotonic() - sent)
            return Completion(
                text=answer.text,
                deployment=choice.name,
                attempts=attempts,
                latency_ms=round((time.monotonic() - started) * 1000),
                usage=answer.usage,
            )
        raise failure(AttemptsExhausted, "every attempt failed")

    async def _choose(
        self, candidates: Sequence[Candidate], usage: Mapping[str, Any]
    ) -> Candidate | None:
        if not self._counts_usage:
            return self._strategy(candidates, usage, self._rng)
        pool = list(candidates)
        while pool:
            choice = self._strategy(pool, usage, self._rng)
            if choice is None:
                return choice
            # Another worker may have taken the last request of this minute since the snapshot:
            # the atomic reservation decides, and a refused deployment leaves the pool.
            deployment = choice.deployment
            if await self.store.reserve(
                choice.key, rpm_limit=deployment.rpm, tpm_limit=deployment.tpm
            ):
                return choice
            pool.remove(choice)
        return None

    def _backoff(self, rounds: int, last: AttemptError | None) -> float:
        delay = self._rng.uniform(0.0, min(BACKOFF_CAP, BACKOFF_BASE * (2**rounds)))
        if last is not None and last.retry_after is not None:
            delay = max(delay, min(last.retry_after, BACKOFF_CAP))
        return delay

    def _timeout(self, deployment: Deployment) -> float:
        return deployment.timeout or self.settings.timeout or DEFAULT_TIMEOUT

    async def _attempt(self, candidate: Candidate, prompt: str) -> ProviderAnswer:
        key = candidate.key
        endpoint = self._endpoints[key]
        timeout = self._timeouts[key]
        request = endpoint.request(prompt)
        call_id = ""
        if self._tracks_in_flight:
            call_id = uuid.uuid4().hex
            await self.store.enter(key, call_id, timeout + IN_FLIGHT_GRACE)
        sent = time.monotonic()
        try:
            response = await self._transport.post(key, request.headers, request.body, timeout)
        except HttpError as exc:
            # Connect, TLS handshake or answer: a timeout (HttpTimeout) is a latency
            # measurement too: the deployment took at least this long.
            timed_out = isinstance(exc, TimeoutError)
            if timed_out:
                self._latency.record(candidate.key, timeout)
                description = f"{exc} after {timeout:g} s"
            else:
                description = f"{exc.kind}: {exc}"
            raise AttemptError(
                self._redact(description),
                retryable=True,
                counts=True,
                elapsed=exc.elapsed,
                timed_out=timed_out,
            ) from None
        except ValueError as exc:  # a header value with a line break: never sent
            raise AttemptError(
                self._redact(f"request not sent: {exc}"), retryable=False, counts=True
            ) from None
        finally:
            if self._tracks_in_flight:
                await self.store.leave(candidate.key, call_id)
        elapsed = time.monotonic() - sent
        status = response.status
        if not 200 <= status < 300:  # a redirect the transport did not follow is a failure too
            raise self._status_error(status, response.body, response.headers, elapsed)
        try:
            answer = endpoint.answer(parse_json(response.body))
        except ValueError as exc:  # not JSON, nested too deeply, or not this format's answer
            raise AttemptError(
                self._redact(f"HTTP {status}: {exc}"),
                status=status,
                retryable=True,
                counts=True,
                elapsed=elapsed,
            ) from None
        self._latency.record(candidate.key, elapsed)
        if self._counts_usage and answer.usage.total_tokens:
            await self.store.add_tokens(candidate.key, answer.usage.total_tokens)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "model group %r: deployment %r answered in %d ms",
                self.group_id,
                candidate.name,
                round(elapsed * 1000),
            )
        return answer

    def _status_error(
        self, status: int, raw: bytes, headers: Mapping[str, str], elapsed: float
    ) -> AttemptError:
        description = self._redact(error_text(status, raw))
        if status == 429:
            return AttemptError(
                description,
                status=status,
                retryable=True,
                counts=True,
                retry_after=retry_after_seconds(headers),
                elapsed=elapsed,
            )
        if status == 408 or status >= 500 or status < 200 or 300 <= status < 400:
            return AttemptError(
                description, status=status, retryable=True, counts=True, elapsed=elapsed
            )
        return AttemptError(
            description,
            status=status,
            retryable=False,
            counts=status in (401, 403, 404),
            elapsed=elapsed,
        )

    async def _note_failure(self, candidate: Candidate, error: AttemptError) -> None:
        settings = self.settings
        if error.status == 429:
            seconds = max(settings.cooldown_time, error.retry_after or 0.0)
            if seconds > 0:
                await self.store.cool_down(candidate.key, seconds)
                log.warning(
                    "model group %r: deployment %r rate limited (429), cooling down for %g s",
                    self.group_id,
                    candidate.name,
                    seconds,
                )
            return
        if not error.counts:
            return
        started = await self.store.note_failure(
            candidate.key, allowed_fails=settings.allowed_fails, cooldown=settings.cooldown_time
        )
        if started:
            log.warning(
                "model group %r: deployment %r failed more than %d time(s) within a minute, "
                "cooling down for %g s",
                self.group_id,
                candidate.name,
                settings.allowed_fails,
                settings.cooldown_time,
            )

    async def _release(self) -> None:
        await self._transport.close()
        await self.store.close()

    async def close(self) -> None:
        """Close the HTTP session and the Redis client now (calls in flight will fail)."""
        self._retired = True
        await self._release()

    async def close_when_idle(self) -> None:
        """Retire: close once the calls in flight have finished. A call that still arrives
        (it fetched this gateway before a reload) works and closes again when it ends."""
        self._retired = True
        await self._idle.wait()
        await self._release()


GatewayFactory = Callable[[ModelGroup, GroupState], ModelGroupGateway]


class GatewayRegistry:
    """The gateways of the configured model groups, by group id, swapped whole on hot reload."""

    def __init__(
        self,
        groups: Mapping[str, ModelGroup] | None = None,
        *,
        factory: GatewayFactory | None = None,
    ) -> None:
        self._factory: GatewayFactory = factory or (
            lambda group, state: ModelGroupGateway(group, state=state)
        )
        self._gateways: dict[str, ModelGroupGateway] = {}
        self._states: dict[str, GroupState] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        if groups:
            self.replace(groups)

    def get(self, group_id: str) -> ModelGroupGateway:
        """The current gateway of a group; KeyError names the group when there is none."""
        try:
            return self._gateways[group_id]
        except KeyError:
            raise KeyError(f"no model group {group_id!r}") from None

    def __contains__(self, group_id: object) -> bool:
        return group_id in self._gateways

    @property
    def group_ids(self) -> list[str]:
        return sorted(self._gateways)

    def replace(self, groups: Mapping[str, ModelGroup]) -> None:
        """Switch to `groups`: new calls use the new gateways at once; calls in flight on
        replaced ones finish there, and their sessions close afterwards. A group whose config is
        unchanged keeps its gateway. Every new gateway is built before anything is swapped, so a
        group that cannot be built (ValueError) leaves the registry as it was."""
        fresh: dict[str, ModelGroupGateway] = {}
        states: dict[str, GroupState] = {}
        for group_id, group in groups.items():
            current = self._gateways.get(group_id)
            if current is not None and current.group == group:
                fresh[group_id] = current
                states[group_id] = self._states[group_id]
                continue
            # Local counters, cooldowns and latencies survive the reload: their keys are the
            # deployments' identities, so an unchanged deployment keeps its history.
            state = self._states.get(group_id) or group_state(group)
            fresh[group_id] = self._factory(group, state)
            states[group_id] = state
        retired = [g for gid, g in self._gateways.items() if fresh.get(gid) is not g]
        # Asked before anything changes: retiring needs the event loop (call from within it).
        loop = asyncio.get_running_loop() if retired else None
        self._gateways = fresh
        self._states = states
        for gateway in retired:
            assert loop is not None
            task = loop.create_task(gateway.close_when_idle())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        """Close every gateway (current ones at once, retiring ones when idle)."""
        gateways, self._gateways = list(self._gateways.values()), {}
        for gateway in gateways:
            await gateway.close()
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
