"""The model-group gateway: one completion call balanced over a group's deployments, with
cooldowns, retries on other deployments, and state shared through Redis when configured.

Call semantics (SPEC §5, litellm Router's keys):

- Attempts: the first plus up to `num_retries` more — after a first failure, as many as the
  `retry_policy` gives its kind (litellm: the first failure's class decides), or the failed
  deployment's own `num_retries`. Each retry goes to a healthy deployment this call has not tried
  yet; only when every healthy one has failed does the call back off (full jitter, 50 ms doubling,
  at most 1 s, at least the router's `retry_after`) and try them again. A group of one waits for
  its deployment's `Retry-After` instead, whole, within the call's deadline (or up to 60 s, as
  litellm, where the release sets none); asked to wait longer, the call ends at once.
- Per-attempt timeout: the group's own `timeout` key (a call argument in Rasa), else the
  deployment's `timeout`, else the router's `timeout`, else 7 s. Where the selected Rasa release
  bounds the whole call (ModelGroup.call_timeout), no attempt or backoff outlasts it.
- In a group of several deployments every failure of one deployment — timeouts, connection
  errors, 5xx, 429, 401/403/404, unreadable answers — fails over to another and counts towards
  its cooldown. A request error (400, 413, 422) fails over too, but counts only once another
  deployment answers the same request (then it was that deployment's own); when every healthy
  deployment returned one, the request itself is at fault and the call ends (RequestRejected).
- A group of one deployment is never cooled down; a 4xx other than 408/429 ends its call at once.
- Cooldown: more than `allowed_fails` (by kind: `allowed_fails_policy`) counted failures of a
  deployment within 60 s cool it down for `cooldown_time` seconds (the deployment's own, else the
  router's; litellm's comparison: `allowed_fails: 3` tolerates three). A 429 cools it down at
  once, for `Retry-After` when longer. With every deployment cooling down, a call fails at once
  with AllDeploymentsCoolingDown and makes no request. `disable_cooldowns` turns all this off.
- Fallbacks: once the group has failed (however), each group of its `fallbacks` is tried in turn,
  with its own retries and its own fallbacks, up to `max_fallbacks` deep; a group already tried
  in this call is not tried again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from yarl import URL

from worker.llm.errors import (
    AllDeploymentsCoolingDown,
    AttemptError,
    AttemptsExhausted,
    ErrorKind,
    FallbacksFailed,
    GatewayError,
    HttpTimeout,
    RateLimitsReached,
    RequestRejected,
    UnusableAnswer,
    kind_of_status,
)
from worker.llm.http import HttpError, Target
from worker.llm.model_group import LITELLM_PARAMS, Deployment, ModelGroup
from worker.llm.observer import SUCCESS, AttemptObserver, outcome_of
from worker.llm.providers import (
    BuildContext,
    HttpProvider,
    LitellmServed,
    Provider,
    ProviderAnswer,
    TokenUsage,
    build_provider,
    error_text,
    parse_json,
    retry_after_seconds,
)
from worker.llm.redaction import Redactor
from worker.llm.router_defaults import ROUTER_TIMEOUT, router_params
from worker.llm.strategies import Candidate, strategy_for, within_limits
from worker.llm.transport import Transport
from worker.llm.usage import (
    KEY_PREFIX,
    LatencyWindows,
    LocalUsage,
    RedisUsage,
    ResilientUsage,
    UsageStore,
    deployment_keys,
    prompt_tokens,
    redis_client,
    redis_location,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = ROUTER_TIMEOUT
BACKOFF_BASE = 0.05
BACKOFF_CAP = 1.0
# The longest Retry-After a call waits for where nothing else bounds it (no call timeout):
# litellm's (_calculate_retry_after honours 0 < Retry-After <= 60).
RETRY_AFTER_LIMIT = 60.0
IN_FLIGHT_GRACE = 1.0  # an in-flight entry outlives its call's timeout by this much at most

ParamsFor = Callable[[Deployment], Mapping[str, Any]]


@dataclass(frozen=True)
class Completion:
    text: str
    deployment: str
    attempts: int  # in every group of the call (fallbacks included)
    latency_ms: int  # the whole call: every attempt and backoff
    usage: TokenUsage
    group: str = ""  # the group that answered (a fallback's, when one did)


@dataclass(frozen=True)
class GroupState:
    """This worker's own state of a group, kept across hot reloads of the group's config."""

    local: LocalUsage
    latency: LatencyWindows


def _latency_window(group: ModelGroup) -> tuple[int, float]:
    args = group.settings.routing_strategy_args
    size = args.get("max_latency_list_size")
    ttl = args.get("ttl")
    return (
        size if isinstance(size, int) and size > 0 else 10,
        float(ttl) if isinstance(ttl, int | float) and ttl > 0 else 60.0,
    )


def group_state(group: ModelGroup) -> GroupState:
    size, max_age = _latency_window(group)
    return GroupState(LocalUsage(), LatencyWindows(size=size, max_age=max_age))


def carried_state(state: GroupState, group: ModelGroup) -> GroupState:
    """The state of a reloaded group: its history, under the new routing_strategy_args."""
    size, max_age = _latency_window(group)
    state.latency.configure(size=size, max_age=max_age)
    return state


class ModelGroupGateway:
    """Completions from one model group, over its Transport (keep-alive connections per
    deployment, or a proxy; opened lazily, `close()` ends them), falling back to the gateways
    of its `fallbacks` (linked by the GatewayRegistry that built them)."""

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
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        env = os.environ if environ is None else environ
        self.group = group
        self.group_id = group.id
        self.settings = group.settings
        self._rng = rng or random.Random()
        self._sleep = sleep
        # One redactor for whatever the gateway says about the group: every provider tells it
        # the secrets it resolves, now and later (refreshed tokens and credentials).
        self._redact = Redactor()
        context = BuildContext(environ=env, routed=group.router is not None, redactor=self._redact)
        # The group's own keys are call arguments in Rasa: over every deployment's parameters.
        call_params = {k: v for k, v in group.call_params.items() if k not in LITELLM_PARAMS}
        self._endpoints: dict[str, Provider] = {}
        try:
            for key, deployment in zip(deployment_keys(group.models), group.models, strict=True):
                self._endpoints[key] = build_provider(
                    deployment, {**params(deployment), **call_params}, context
                )
        except ValueError as exc:
            raise ValueError(f"model group {group.id!r}: {exc}") from None
        # A tuple: the same immutable object on every call, so strategies may cache by it.
        self._candidates = tuple(Candidate(key, e.deployment) for key, e in self._endpoints.items())
        self._keys = [c.key for c in self._candidates]
        self._strategy = strategy_for(self.settings)
        self._counts_usage = self.settings.routing_strategy == "usage-based-routing"
        self._tracks_in_flight = self.settings.routing_strategy == "least-busy"
        self._uses_latency = self.settings.routing_strategy == "latency-based-routing"
        # Per deployment, built once: the prepared target (HTTP providers) and the timeout.
        self._http: dict[str, HttpProvider] = {}
        self._served: dict[str, LitellmServed] = {}
        self._targets: dict[str, Target] = {}
        for key, endpoint in self._endpoints.items():
            if isinstance(endpoint, HttpProvider):
                self._http[key] = endpoint
                try:
                    self._targets[key] = Target(URL(endpoint.url, encoded=True))
                except ValueError:
                    name = endpoint.name
                    raise ValueError(
                        f"model group {group.id!r}: deployment {name!r}: api_base must be an "
                        "http(s) URL"
                    ) from None
            else:
                assert isinstance(endpoint, LitellmServed)
                self._served[key] = endpoint
        group_timeout = group.call_params.get("timeout")
        self._timeouts = {
            key: self._timeout(e.deployment, group_timeout) for key, e in self._endpoints.items()
        }
        # TLS trust, proxies and netrc credentials, read from the environment now.
        try:
            self._transport = Transport(self._targets, env)
        except ValueError as exc:
            raise ValueError(f"model group {group.id!r}: {exc}") from None
        self._redact.learn(s for e in self._endpoints.values() for s in e.secrets)
        self._redact.learn(group.secrets())
        self._redact.learn(self._transport.secrets)
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
        self._fallbacks: tuple[ModelGroupGateway, ...] = ()
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

    def link_fallbacks(self, gateways: Mapping[str, ModelGroupGateway]) -> None:
        """Fall back to these groups' gateways (`settings.fallbacks`, in order); KeyError names
        a group that has none. Called once, by the registry, before the gateway is used."""
        missing = [g for g in self.settings.fallbacks if g not in gateways]
        if missing:
            raise KeyError(f"model group {self.group_id!r}: no fallback group {missing[0]!r}")
        self._fallbacks = tuple(gateways[g] for g in self.settings.fallbacks)

    @property
    def fallbacks(self) -> tuple[ModelGroupGateway, ...]:
        return self._fallbacks

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

    async def complete(self, prompt: str, *, chain: FallbackChain | None = None) -> Completion:
        """One completion of `prompt` (sent as one user message), from this group or, once it
        has failed, from its fallbacks; GatewayError when none. `chain`: the call this one falls
        back for (given by the gateway that falls back)."""
        started = time.monotonic() if chain is None else chain.started
        self._active += 1
        if self._active == 1:
            self._idle.clear()
        try:
            try:
                return await self._complete(prompt, started)
            except GatewayError as error:
                depth = 0 if chain is None else chain.depth
                if not self._fallbacks or depth >= self.settings.max_fallbacks:
                    raise
                first = error
            if chain is None:
                chain = FallbackChain(started, 0, {self.group_id})
            return await self._fall_back(prompt, chain, first)
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()
                if self._retired:
                    await self._release()

    async def _fall_back(
        self, prompt: str, chain: FallbackChain, first: GatewayError
    ) -> Completion:
        failure, attempts = first, first.attempts
        deeper = FallbackChain(chain.started, chain.depth + 1, chain.tried)
        for fallback in self._fallbacks:
            if fallback.group_id in chain.tried:
                continue
            chain.tried.add(fallback.group_id)
            log.warning(
                "model group %r failed (%s); falling back to model group %r",
                self.group_id,
                failure.message,
                fallback.group_id,
            )
            try:
                completion = await fallback.complete(prompt, chain=deeper)
            except GatewayError as error:
                failure, attempts = error, attempts + error.attempts
                continue
            return replace(completion, attempts=completion.attempts + attempts)
        if failure is first:
            raise first
        raise FallbacksFailed(
            "the group and its fallbacks failed",
            group=self.group_id,
            attempts=attempts,
            last_error=failure.last_error,
            deployment=failure.deployment,
            last_group=failure.last_group,
        ) from failure

    async def _complete(self, prompt: str, started: float) -> Completion:
        settings = self.settings
        candidates = self._candidates
        single = len(candidates) == 1
        call_timeout = self.group.call_timeout
        deadline = None if call_timeout is None else started + call_timeout
        max_attempts = 1 + settings.num_retries
        attempts = 0
        rounds = 0
        tried: set[str] = set()
        # Deployments that refused this request (a request error), not yet counted: made on the
        # first such failure only (most calls have none).
        refused: set[str] | None = None
        unproven: list[tuple[Candidate, AttemptError]] | None = None
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

        def out_of_time() -> GatewayError:
            return failure(
                AttemptsExhausted, f"the group's call timeout of {call_timeout:g} s passed"
            )

        while attempts < max_attempts:
            snapshot = await self.store.snapshot(self._keys)
            cooling = snapshot.cooling
            healthy: Sequence[Candidate] = (
                candidates
                if single or not cooling
                else [c for c in candidates if c.key not in cooling]
            )
            if not healthy:
                raise failure(AllDeploymentsCoolingDown, "every deployment is cooling down")
            fresh = [c for c in healthy if c.key not in tried] if tried else healthy
            if not fresh:
                if refused is not None and all(c.key in refused for c in healthy):
                    raise failure(RequestRejected, "every deployment refused the request")
                # Every healthy deployment already failed this call: wait a little (a group of
                # one: as long as its Retry-After asks), then start over among them (re-reading
                # health after the wait).
                delay = self._backoff(rounds, last, single)
                asked = last is not None and last.retry_after is not None and single
                if deadline is not None and time.monotonic() + delay >= deadline:
                    if asked:
                        raise failure(
                            AttemptsExhausted,
                            f"the deployment asks to wait {delay:g} s (Retry-After), past the "
                            f"group's call timeout of {call_timeout:g} s",
                        )
                    raise out_of_time()
                if deadline is None and asked and delay > RETRY_AFTER_LIMIT:
                    raise failure(
                        AttemptsExhausted,
                        f"the deployment asks to wait {delay:g} s (Retry-After), longer than "
                        f"a call without a call timeout waits ({RETRY_AFTER_LIMIT:g} s)",
                    )
                await self._sleep(delay)
                rounds += 1
                tried.clear()
                continue
            usage: Mapping[str, Any] = snapshot.usage
            if self._uses_latency:
                usage = self._latency.usage(snapshot.usage)
            if self._counts_usage:
                choice = await self._reserve(fresh, usage, prompt)
            else:  # no coroutine for a choice that waits for nothing
                choice = self._strategy(fresh, usage, self._rng)
            if choice is None:
                raise failure(RateLimitsReached, "every deployment is at its rpm/tpm limit")
            timeout = self._timeouts[choice.key]
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
                if timeout <= 0:
                    raise out_of_time()
            if self._uses_latency:  # no await since the usage was read: one probe at a time
                self._latency.probe(choice.key, timeout)
            attempts += 1
            tried.add(choice.key)
            name = last_name = choice.name  # a property of a property: read once
            sent = time.monotonic()
            try:
                answer = await self._attempt(choice, prompt, timeout)
            except AttemptError as error:
                self._observer.attempt(
                    self.group_id, name, outcome_of(error), time.monotonic() - sent
                )
                if last is None:  # litellm: the first failure decides how many retries follow
                    max_attempts = 1 + self._retries_after(choice, error)
                last = error
                self._latency.failed(choice.key, error, timeout)
                log.info(
                    "model group %r: deployment %r failed (attempt %d of %d): %s",
                    self.group_id,
                    name,
                    attempts,
                    max_attempts,
                    error.description,
                )
                if single:
                    if error.refused:
                        raise failure(RequestRejected, "the request was refused") from None
                elif error.request_error:
                    if refused is None or unproven is None:
                        refused, unproven = set(), []
                    refused.add(choice.key)
                    unproven.append((choice, error))
                else:
                    await self._note_failure(choice, error)
                continue
            self._observer.attempt(self.group_id, name, SUCCESS, time.monotonic() - sent)
            if self._counts_usage and answer.usage.total_tokens:
                # The reservation counted the prompt's estimate: correct it to the reported usage.
                tokens = answer.usage.total_tokens - prompt_tokens(prompt)
                await self.store.add_tokens(choice.key, tokens)
            # Another deployment answered this request: the request errors were their own.
            if unproven:
                for candidate, refusal in unproven:
                    await self._note_failure(candidate, refusal)
            return Completion(
                text=answer.text,
                deployment=name,
                attempts=attempts,
                latency_ms=round((time.monotonic() - started) * 1000),
                usage=answer.usage,
                group=self.group_id,
            )
        raise failure(AttemptsExhausted, "every attempt failed")

    def _retries_after(self, candidate: Candidate, error: AttemptError) -> int:
        own = candidate.deployment.num_retries
        policy = self.settings.retry_policy.get(error.kind)
        if policy is not None:
            return policy
        if own is not None:
            return own
        return self.settings.retries_after(error.kind)

    async def _reserve(
        self, candidates: Sequence[Candidate], usage: Mapping[str, Any], prompt: str
    ) -> Candidate | None:
        """usage-based-routing's choice: one within its limits that a reservation confirms."""
        tokens = prompt_tokens(prompt)
        pool = within_limits(candidates, usage, tokens)
        while pool:
            choice = self._strategy(pool, usage, self._rng)
            if choice is None:
                return choice
            # Another worker may have taken the last request of this minute since the snapshot:
            # the atomic reservation decides, and a refused deployment leaves the pool.
            deployment = choice.deployment
            if await self.store.reserve(
                choice.key, rpm_limit=deployment.rpm, tpm_limit=deployment.tpm, tokens=tokens
            ):
                return choice
            pool.remove(choice)
        return None

    def _backoff(self, rounds: int, last: AttemptError | None, single: bool) -> float:
        delay = self._rng.uniform(0.0, min(BACKOFF_CAP, BACKOFF_BASE * (2**rounds)))
        if last is not None and last.retry_after is not None:
            # A group of several has cooled the deployment down for its Retry-After, and waits
            # only a little before trying the others again; a group of one waits as asked.
            asked = last.retry_after if single else min(last.retry_after, BACKOFF_CAP)
            delay = max(delay, asked)
        return max(delay, self.settings.retry_after)

    def _timeout(self, deployment: Deployment, group_timeout: Any) -> float:
        # litellm's order (Router._get_non_stream_timeout): the call's own argument (the group's
        # `timeout` key), the deployment's, the router's.
        given = isinstance(group_timeout, int | float) and not isinstance(group_timeout, bool)
        if given and group_timeout > 0:
            return float(group_timeout)
        return deployment.timeout or self.settings.timeout or DEFAULT_TIMEOUT

    async def _attempt(self, candidate: Candidate, prompt: str, timeout: float) -> ProviderAnswer:
        key = candidate.key
        endpoint = self._http.get(key)
        if endpoint is None:
            return await self._served_attempt(candidate, prompt, timeout)
        headers: Mapping[str, str]
        if endpoint.signer is None:  # the provider's own headers, the same on every call
            headers, body = endpoint.headers, endpoint.encoded_body(prompt)
        else:
            request = await endpoint.signer.sign(endpoint.request(prompt), timeout)
            headers, body = request.headers, request.body
        if endpoint.token is not None:
            try:
                bearer = await endpoint.token.header()
            except Exception as exc:  # noqa: BLE001 - TokenUnavailable, or anything of azure's
                raise AttemptError(self._redact(str(exc)), kind=ErrorKind.AUTHENTICATION) from None
            headers = {**headers, "Authorization": bearer}
        call_id = await self._enter(key, timeout) if self._tracks_in_flight else ""
        sent = time.monotonic()
        try:
            response = await self._transport.post(key, headers, body, timeout)
        except HttpError as exc:
            raise self._transport_error(exc, timeout) from None
        except ValueError as exc:  # a header value with a line break: never sent
            raise AttemptError(
                self._redact(f"request not sent: {exc}"), kind=ErrorKind.API_ERROR
            ) from None
        finally:
            if call_id:
                await self.store.leave(key, call_id)
        elapsed = time.monotonic() - sent
        status = response.status
        if not 200 <= status < 300:  # a redirect the transport did not follow is a failure too
            raise self._status_error(status, response.body, response.headers, elapsed)
        try:
            answer = endpoint.answer(parse_json(response.body))
        except ValueError as exc:  # not JSON, nested too deeply, or not this format's answer
            raise AttemptError(
                self._redact(f"HTTP {status}: {exc}"),
                kind=ErrorKind.API_ERROR,
                status=status,
                elapsed=elapsed,
            ) from None
        self._answered(candidate, elapsed)
        return answer

    async def _served_attempt(
        self, candidate: Candidate, prompt: str, timeout: float
    ) -> ProviderAnswer:
        """An attempt on a deployment litellm serves: the same accounting around it."""
        key = candidate.key
        call_id = await self._enter(key, timeout) if self._tracks_in_flight else ""
        sent = time.monotonic()
        try:
            answer = await self._served[key].complete(prompt, timeout)
        except AttemptError as error:
            error.description = self._redact(error.description)
            raise
        finally:
            if call_id:
                await self.store.leave(key, call_id)
        self._answered(candidate, time.monotonic() - sent)
        return answer

    async def _enter(self, key: str, timeout: float) -> str:
        """least-busy: count a call in flight on `key` (until `leave`, or its deadline)."""
        call_id = uuid.uuid4().hex
        await self.store.enter(key, call_id, timeout + IN_FLIGHT_GRACE)
        return call_id

    def _answered(self, candidate: Candidate, elapsed: float) -> None:
        # A failed attempt's sample (a timeout's too) is taken by `_complete`, with its error.
        self._latency.record(candidate.key, elapsed)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "model group %r: deployment %r answered in %d ms",
                self.group_id,
                candidate.name,
                round(elapsed * 1000),
            )

    def _transport_error(self, exc: HttpError, timeout: float) -> AttemptError:
        # Connect, TLS handshake or answer. A timeout (HttpTimeout) is a latency measurement
        # too (taken with the attempt's failure): the deployment took at least this long.
        if isinstance(exc, HttpTimeout):
            return AttemptError(
                self._redact(f"{exc} after {timeout:g} s"),
                kind=ErrorKind.TIMEOUT,
                elapsed=exc.elapsed,
                timed_out=True,
            )
        kind = ErrorKind.API_ERROR if isinstance(exc, UnusableAnswer) else ErrorKind.CONNECTION
        return AttemptError(self._redact(f"{exc.kind}: {exc}"), kind=kind, elapsed=exc.elapsed)

    def _status_error(
        self, status: int, raw: bytes, headers: Mapping[str, str], elapsed: float
    ) -> AttemptError:
        return AttemptError(
            self._redact(error_text(status, raw)),
            kind=kind_of_status(status),
            status=status,
            retry_after=retry_after_seconds(headers) if status == 429 else None,
            elapsed=elapsed,
        )

    async def _note_failure(self, candidate: Candidate, error: AttemptError) -> None:
        settings = self.settings
        if settings.disable_cooldowns:
            return
        own = candidate.deployment.cooldown_time
        cooldown = settings.cooldown_time if own is None else own
        if cooldown <= 0:  # a deployment's `cooldown_time: 0`: never cooled
            return
        kind = error.kind
        if kind is ErrorKind.RATE_LIMIT and kind not in settings.allowed_fails_policy:
            seconds = max(cooldown, error.retry_after or 0.0)
            await self.store.cool_down(candidate.key, seconds)
            log.warning(
                "model group %r: deployment %r rate limited (429), cooling down for %g s",
                self.group_id,
                candidate.name,
                seconds,
            )
            return
        allowed = settings.allowed_fails_for(kind)
        started = await self.store.note_failure(
            candidate.key, allowed_fails=allowed, cooldown=cooldown
        )
        if started:
            log.warning(
                "model group %r: deployment %r failed more than %d time(s) within a minute, "
                "cooling down for %g s",
                self.group_id,
                candidate.name,
                allowed,
                cooldown,
            )

    async def _release(self) -> None:
        await self._transport.close()
        await self.store.close()
        for endpoint in self._endpoints.values():
            await endpoint.close()

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


@dataclass(frozen=True, slots=True)
class FallbackChain:
    """A call falling back through groups: when it started, how deep it is, the groups tried."""

    started: float
    depth: int
    tried: set[str]


def fallback_closure(groups: Mapping[str, ModelGroup], start: str) -> list[str]:
    """`start` and every group its fallbacks reach, in the order they are first named."""
    order = [start]
    for group_id in order:
        group = groups.get(group_id)
        if group is None:
            continue
        for target in group.settings.fallbacks:
            if target not in order:
                order.append(target)
    return order


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
        replaced ones finish there — on the fallbacks they were linked to, too — and their
        sessions close afterwards. A gateway is kept only when its group's config and every
        group its fallbacks reach are unchanged. Every new gateway is built and linked before
        anything is swapped, so a group that cannot be built (ValueError, or KeyError for a
        fallback group not given) leaves the registry as it was."""
        unchanged = {
            gid for gid, group in groups.items()
            if gid in self._gateways and self._gateways[gid].group == group
        }  # fmt: skip
        kept = {
            gid for gid in unchanged
            if all(target in unchanged for target in fallback_closure(groups, gid))
        }  # fmt: skip
        fresh: dict[str, ModelGroupGateway] = {}
        states: dict[str, GroupState] = {}
        built: list[ModelGroupGateway] = []
        for group_id, group in groups.items():
            if group_id in kept:
                fresh[group_id] = self._gateways[group_id]
                states[group_id] = self._states[group_id]
                continue
            # Local counters, cooldowns and latencies survive the reload: their keys are the
            # deployments' identities, so an unchanged deployment keeps its history.
            previous = self._states.get(group_id)
            state = carried_state(previous, group) if previous else group_state(group)
            gateway = self._factory(group, state)
            fresh[group_id] = gateway
            states[group_id] = state
            built.append(gateway)
        for gateway in built:
            gateway.link_fallbacks(fresh)
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
