"""State shared by the workers of a model group: per-minute rpm/tpm counters, calls in flight,
failures and cooldowns. One interface, two backends: in-process (`LocalUsage`) and Redis
(`RedisUsage`), the latter wrapped by `ResilientUsage`, which falls back to local state while Redis
is unreachable, so a Redis outage never fails a route.

Redis key layout (every key expires; `{group}` is a Redis Cluster hash tag, so one group's keys
share a slot and the Lua scripts stay cluster-safe):

    {prefix}:{<group>}:<deployment>:rpm:<epoch minute>   INCR by a Lua check-and-increment, EX 120
    {prefix}:{<group>}:<deployment>:tpm:<epoch minute>   INCRBY tokens, EX 120: a request's
                                                         estimated input tokens when it is
                                                         reserved, corrected by its answer's usage
    {prefix}:{<group>}:<deployment>:inflight             ZSET call id -> deadline (ms); counted
                                                         from now on, so a crashed worker's calls
                                                         vanish at their deadline
    {prefix}:{<group>}:<deployment>:fails                ZSET of failure times (server clock),
                                                         trimmed to the last 60 s
    {prefix}:{<group>}:<deployment>:cooldown             SET PX <cooldown ms>

Every time in Redis is Redis's own (`TIME`, read inside the Lua scripts): the minute of the
counters and the in-flight deadlines, so workers whose clocks disagree still count the same
minute and the same calls. The scripts derive the per-minute names from the deployment's key
prefix; every name carries the group's hash tag, so they stay in the slot of the declared keys.

`<deployment>` is `deployment_keys()`: the deployment's name plus a hash of its non-secret
identity (provider, api_base, deployment, model, api_version, region); never a key or password.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from worker.llm.errors import AttemptError, ErrorKind
from worker.llm.model_group import Deployment, RouterSettings
from worker.llm.redaction import Redactor
from worker.llm.strategies import DeploymentUsage, tokens_fit

log = logging.getLogger(__name__)

KEY_PREFIX = "coexrouter"
FAILURE_WINDOW = 60.0  # `allowed_fails` counts failures within this many seconds
COUNTER_TTL = 120  # a per-minute counter outlives its minute, then expires
REDIS_TIMEOUT = 0.5  # seconds; a slow Redis must not hold a route up for long
REDIS_RETRY_AFTER = 5.0  # seconds on local state before Redis is tried again

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
T = TypeVar("T")


def deployment_keys(deployments: Sequence[Deployment]) -> list[str]:
    """Stable, secret-free identities of a group's deployments (same config → same keys on
    every worker; a deployment keeps its key when others are added or removed)."""
    keys: list[str] = []
    seen: Counter[str] = Counter()
    for deployment in deployments:
        identity = json.dumps(
            [
                deployment.provider,
                deployment.api_base,
                deployment.deployment,
                deployment.model,
                deployment.api_version,
                deployment.aws_region_name,
            ]
        )
        digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
        base = f"{_UNSAFE.sub('_', deployment.name)[:64]}@{digest}"
        seen[base] += 1
        keys.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return keys


def current_minute(now: float | None = None) -> int:
    return int((time.time() if now is None else now) // 60)


# litellm counts a chat request's input as its messages' tokens plus 3 per message, 1 for the
# role and 3 that prime the reply (token_counter, 1.69.3-1.101): one user message adds 7.
MESSAGE_TOKENS = 7


def prompt_tokens(prompt: str) -> int:
    """The input tokens of a request carrying `prompt`, estimated before it is sent: one token
    per 4 bytes of UTF-8 (OpenAI's rule of thumb for English, and near it for other scripts,
    whose characters take more bytes and more tokens), plus the message's framing. An estimate
    by design: each model has its own tokenizer, and a tokenizer per call would cost more than
    the rest of the call; the minute's counter is corrected by the usage the answer reports."""
    size = len(prompt) if prompt.isascii() else len(prompt.encode("utf-8", "surrogatepass"))
    return MESSAGE_TOKENS + (size + 3) // 4


_IDLE = DeploymentUsage()
_NONE: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Snapshot:
    usage: dict[str, DeploymentUsage]
    cooling: frozenset[str]


class UsageStore(ABC):
    """What the gateway reads and writes about its deployments. Keys come from deployment_keys."""

    @abstractmethod
    async def snapshot(self, keys: Sequence[str]) -> Snapshot: ...

    @abstractmethod
    async def cool_down(self, key: str, seconds: float) -> None:
        """Cool the deployment down for `seconds` from now (never shortens a longer cooldown)."""

    @abstractmethod
    async def cooldown_left(self, key: str) -> float:
        """Seconds the deployment stays cooled down (0 when it is healthy)."""

    @abstractmethod
    async def note_failure(self, key: str, *, allowed_fails: int, cooldown: float) -> bool:
        """Count a failure; cool down when more than `allowed_fails` fell within the window.
        True when this failure started a cooldown."""

    @abstractmethod
    async def reserve(
        self, key: str, *, rpm_limit: int | None, tpm_limit: int | None, tokens: int = 0
    ) -> bool:
        """Atomically: False when at a limit this minute (`rpm_limit` requests, or `tpm_limit`
        tokens once this request's own input `tokens` are added), else count one request and
        its `tokens`, and True."""

    @abstractmethod
    async def add_tokens(self, key: str, tokens: int) -> None:
        """Add `tokens` (negative: take back an overestimate) to this minute's count, which
        never goes below 0."""

    @abstractmethod
    async def enter(self, key: str, call_id: str, ttl: float) -> None:
        """A call started; it stops counting after `ttl` seconds even if `leave` never comes."""

    @abstractmethod
    async def leave(self, key: str, call_id: str) -> None: ...

    async def close(self) -> None:
        return None


class LocalUsage(UsageStore):
    """In-process state. `clock` (monotonic) times cooldowns and failures, `wall` the minutes."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._cooldown_until: dict[str, float] = {}
        self._failures: dict[str, deque[float]] = {}
        self._minute = current_minute(wall())
        self._requests: Counter[str] = Counter()
        self._tokens: Counter[str] = Counter()
        self._in_flight: dict[str, dict[str, float]] = {}

    def _roll_minute(self) -> None:
        minute = current_minute(self._wall())
        if minute != self._minute:
            self._minute = minute
            self._requests.clear()
            self._tokens.clear()

    def _in_flight_count(self, key: str, now: float) -> int:
        calls = self._in_flight.get(key)
        if not calls:
            return 0
        for call_id in [c for c, deadline in calls.items() if deadline <= now]:
            del calls[call_id]
        return len(calls)

    async def snapshot(self, keys: Sequence[str]) -> Snapshot:
        if not (self._requests or self._tokens or self._in_flight or self._cooldown_until):
            # Nothing counted, in flight or ever cooled down: every deployment is idle (the
            # common case where the strategy keeps no counters). Writes roll the minute first.
            return Snapshot(dict.fromkeys(keys, _IDLE), _NONE)
        self._roll_minute()
        now = self._clock()
        usage: dict[str, DeploymentUsage] = {}
        for key in keys:
            in_flight = self._in_flight_count(key, now) if self._in_flight else 0
            # Counters are only kept by the strategies that need them; idle is the common case.
            rpm = self._requests.get(key, 0)
            tpm = self._tokens.get(key, 0)
            if in_flight or rpm or tpm:
                usage[key] = DeploymentUsage(in_flight=in_flight, rpm=rpm, tpm=tpm)
            else:
                usage[key] = _IDLE
        cooling = (
            frozenset(k for k in keys if self._cooldown_until.get(k, 0.0) > now)
            if self._cooldown_until
            else _NONE
        )
        return Snapshot(usage, cooling)

    async def cool_down(self, key: str, seconds: float) -> None:
        if seconds <= 0:
            return
        until = self._clock() + seconds
        self._cooldown_until[key] = max(until, self._cooldown_until.get(key, 0.0))

    async def cooldown_left(self, key: str) -> float:
        return max(0.0, self._cooldown_until.get(key, 0.0) - self._clock())

    async def note_failure(self, key: str, *, allowed_fails: int, cooldown: float) -> bool:
        now = self._clock()
        failures = self._failures.setdefault(key, deque())
        failures.append(now)
        while failures and failures[0] <= now - FAILURE_WINDOW:
            failures.popleft()
        if len(failures) > allowed_fails and cooldown > 0:
            failures.clear()  # a recovered deployment starts with a clean slate
            await self.cool_down(key, cooldown)
            return True
        return False

    async def reserve(
        self, key: str, *, rpm_limit: int | None, tpm_limit: int | None, tokens: int = 0
    ) -> bool:
        self._roll_minute()
        if rpm_limit is not None and self._requests[key] >= rpm_limit:
            return False
        if tpm_limit is not None and not tokens_fit(self._tokens[key], tokens, tpm_limit):
            return False
        self._requests[key] += 1
        if tokens:
            self._tokens[key] += tokens
        return True

    async def add_tokens(self, key: str, tokens: int) -> None:
        self._roll_minute()
        self._tokens[key] = max(0, self._tokens[key] + tokens)

    async def enter(self, key: str, call_id: str, ttl: float) -> None:
        self._in_flight.setdefault(key, {})[call_id] = self._clock() + ttl

    async def leave(self, key: str, call_id: str) -> None:
        self._in_flight.get(key, {}).pop(call_id, None)


_NOTE_FAILURE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('PEXPIRE', KEYS[1], window)
if redis.call('ZCARD', KEYS[1]) > tonumber(ARGV[2]) and tonumber(ARGV[3]) > 0 then
  redis.call('DEL', KEYS[1])
  if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[3]) then
    redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  end
  return 1
end
return 0
"""


_COOL_DOWN = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
"""

# Server time in ms (`now`) and the epoch minute: the one clock every worker's calls agree on.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local minute = math.floor(tonumber(t[1]) / 60)
"""

# KEYS: each deployment's key prefix. Per deployment: rpm, tpm, calls in flight, cooling (0/1).
_SNAPSHOT = (
    _NOW
    + """
local out = {}
for _, base in ipairs(KEYS) do
  out[#out + 1] = tonumber(redis.call('GET', base .. ':rpm:' .. minute) or '0')
  out[#out + 1] = tonumber(redis.call('GET', base .. ':tpm:' .. minute) or '0')
  out[#out + 1] = redis.call('ZCOUNT', base .. ':inflight', now, '+inf')
  out[#out + 1] = redis.call('EXISTS', base .. ':cooldown')
end
return out
"""
)

# KEYS[1]: the deployment's key prefix. ARGV: rpm limit, tpm limit (0 = none), counter TTL,
# the request's estimated input tokens.
_RESERVE = (
    _NOW
    + """
local rpm_key = KEYS[1] .. ':rpm:' .. minute
local tpm_key = KEYS[1] .. ':tpm:' .. minute
local rpm_limit = tonumber(ARGV[1])
local tpm_limit = tonumber(ARGV[2])
local tokens = tonumber(ARGV[4])
if rpm_limit > 0 and tonumber(redis.call('GET', rpm_key) or '0') >= rpm_limit then return 0 end
if tpm_limit > 0 then
  local used = tonumber(redis.call('GET', tpm_key) or '0')
  if used >= tpm_limit or used + tokens > tpm_limit then return 0 end
end
redis.call('INCR', rpm_key)
redis.call('EXPIRE', rpm_key, ARGV[3])
if tokens > 0 then
  redis.call('INCRBY', tpm_key, tokens)
  redis.call('EXPIRE', tpm_key, ARGV[3])
end
return 1
"""
)

# KEYS[1]: the deployment's key prefix. ARGV: tokens (may be negative), counter TTL.
_ADD_TOKENS = (
    _NOW
    + """
local tpm_key = KEYS[1] .. ':tpm:' .. minute
if redis.call('INCRBY', tpm_key, ARGV[1]) < 0 then redis.call('SET', tpm_key, 0) end
redis.call('EXPIRE', tpm_key, ARGV[2])
return 1
"""
)

# KEYS[1]: the in-flight ZSET. ARGV: call id, ttl (ms).
_ENTER = (
    _NOW
    + """
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ttl + 1000)
return 1
"""
)


def redis_client(settings: RouterSettings) -> Redis | None:
    """A client for the group's Redis, or None when the router names none."""
    options: dict[str, Any] = {
        "socket_timeout": REDIS_TIMEOUT,
        "socket_connect_timeout": REDIS_TIMEOUT,
        # The fallback handles outages; redis-py's own retries would only delay it.
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": True,
    }
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    if settings.redis_url:
        if password is not None:
            options["password"] = password
        return Redis.from_url(settings.redis_url.get_secret_value(), **options)
    if settings.redis_host:
        return Redis(
            host=settings.redis_host, port=settings.redis_port, password=password, **options
        )
    return None


def redis_location(settings: RouterSettings) -> str:
    """host:port for messages; a URL's credentials are left out."""
    if settings.redis_url:
        parts = urlsplit(settings.redis_url.get_secret_value())
        return f"{parts.hostname or '?'}:{parts.port or 6379}"
    return f"{settings.redis_host}:{settings.redis_port}"


class RedisUsage(UsageStore):
    """State in Redis, shared by every worker of the group (see the module doc for the keys)."""

    def __init__(self, client: Redis, group: str, *, prefix: str = KEY_PREFIX) -> None:
        self._client = client
        self._base = f"{prefix}:{{{group}}}"
        self._note_failure = client.register_script(_NOTE_FAILURE)
        self._cool_down = client.register_script(_COOL_DOWN)
        self._snapshot = client.register_script(_SNAPSHOT)
        self._reserve = client.register_script(_RESERVE)
        self._add_tokens = client.register_script(_ADD_TOKENS)
        self._enter = client.register_script(_ENTER)
        self._prefixes: dict[str, str] = {}

    def key(self, deployment_key: str, kind: str) -> str:
        return f"{self._base}:{deployment_key}:{kind}"

    def _prefix(self, deployment_key: str) -> str:
        prefix = self._prefixes.get(deployment_key)
        if prefix is None:
            prefix = self._prefixes[deployment_key] = f"{self._base}:{deployment_key}"
        return prefix

    async def snapshot(self, keys: Sequence[str]) -> Snapshot:
        values = await self._snapshot(keys=[self._prefix(key) for key in keys])
        usage: dict[str, DeploymentUsage] = {}
        cooling: set[str] = set()
        for index, key in enumerate(keys):
            rpm, tpm, in_flight, cooldown = values[4 * index : 4 * index + 4]
            usage[key] = DeploymentUsage(in_flight=int(in_flight), rpm=int(rpm), tpm=int(tpm))
            if int(cooldown):
                cooling.add(key)
        return Snapshot(usage, frozenset(cooling))

    async def cool_down(self, key: str, seconds: float) -> None:
        milliseconds = int(seconds * 1000)
        if milliseconds > 0:
            await self._cool_down(keys=[self.key(key, "cooldown")], args=[milliseconds])

    async def cooldown_left(self, key: str) -> float:
        milliseconds = await self._client.pttl(self.key(key, "cooldown"))
        return max(0, int(milliseconds)) / 1000.0

    async def note_failure(self, key: str, *, allowed_fails: int, cooldown: float) -> bool:
        started = await self._note_failure(
            keys=[self.key(key, "fails"), self.key(key, "cooldown")],
            args=[
                int(FAILURE_WINDOW * 1000),
                allowed_fails,
                int(cooldown * 1000),
                uuid.uuid4().hex,
            ],
        )
        return bool(started)

    async def reserve(
        self, key: str, *, rpm_limit: int | None, tpm_limit: int | None, tokens: int = 0
    ) -> bool:
        granted = await self._reserve(
            keys=[self._prefix(key)], args=[rpm_limit or 0, tpm_limit or 0, COUNTER_TTL, tokens]
        )
        return bool(granted)

    async def add_tokens(self, key: str, tokens: int) -> None:
        await self._add_tokens(keys=[self._prefix(key)], args=[tokens, COUNTER_TTL])

    async def enter(self, key: str, call_id: str, ttl: float) -> None:
        await self._enter(keys=[self.key(key, "inflight")], args=[call_id, int(ttl * 1000)])

    async def leave(self, key: str, call_id: str) -> None:
        await self._client.zrem(self.key(key, "inflight"), call_id)

    async def close(self) -> None:
        await self._client.aclose()


class ResilientUsage(UsageStore):
    """Redis first; while it is unreachable, this worker's local state (warned about once per
    outage, Redis retried every `retry_after` seconds). Routing never fails because of Redis."""

    def __init__(
        self,
        primary: UsageStore,
        fallback: UsageStore,
        *,
        group: str,
        location: str,
        redactor: Redactor | None = None,
        retry_after: float = REDIS_RETRY_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._group = group
        self._location = location
        self._redact = redactor or Redactor()
        self._retry_after = retry_after
        self._clock = clock
        self._down_since: float | None = None
        self._retry_at = 0.0

    @property
    def degraded(self) -> bool:
        return self._down_since is not None

    async def _either(
        self, primary: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]
    ) -> T:
        if self._down_since is not None and self._clock() < self._retry_at:
            return await fallback()
        try:
            result = await primary()
        except (TimeoutError, RedisError, OSError) as exc:
            if self._down_since is None:
                self._down_since = self._clock()
                log.warning(
                    "model group %r: Redis at %s unreachable (%s); balancing on this worker's "
                    "local state until it is back",
                    self._group,
                    self._location,
                    self._redact(f"{type(exc).__name__}: {exc}"),
                )
            self._retry_at = self._clock() + self._retry_after
            return await fallback()
        if self._down_since is not None:
            self._down_since = None
            log.info("model group %r: Redis at %s reachable again", self._group, self._location)
        return result

    async def snapshot(self, keys: Sequence[str]) -> Snapshot:
        return await self._either(
            lambda: self._primary.snapshot(keys), lambda: self._fallback.snapshot(keys)
        )

    async def cool_down(self, key: str, seconds: float) -> None:
        # Local state always learns of a cooldown too, so a later outage still honours it.
        await self._fallback.cool_down(key, seconds)
        await self._either(lambda: self._primary.cool_down(key, seconds), _nothing)

    async def cooldown_left(self, key: str) -> float:
        return await self._either(
            lambda: self._primary.cooldown_left(key), lambda: self._fallback.cooldown_left(key)
        )

    async def note_failure(self, key: str, *, allowed_fails: int, cooldown: float) -> bool:
        return await self._either(
            lambda: self._primary.note_failure(key, allowed_fails=allowed_fails, cooldown=cooldown),
            lambda: self._fallback.note_failure(
                key, allowed_fails=allowed_fails, cooldown=cooldown
            ),
        )

    async def reserve(
        self, key: str, *, rpm_limit: int | None, tpm_limit: int | None, tokens: int = 0
    ) -> bool:
        return await self._either(
            lambda: self._primary.reserve(
                key, rpm_limit=rpm_limit, tpm_limit=tpm_limit, tokens=tokens
            ),
            lambda: self._fallback.reserve(
                key, rpm_limit=rpm_limit, tpm_limit=tpm_limit, tokens=tokens
            ),
        )

    async def add_tokens(self, key: str, tokens: int) -> None:
        await self._either(
            lambda: self._primary.add_tokens(key, tokens),
            lambda: self._fallback.add_tokens(key, tokens),
        )

    async def enter(self, key: str, call_id: str, ttl: float) -> None:
        await self._either(
            lambda: self._primary.enter(key, call_id, ttl),
            lambda: self._fallback.enter(key, call_id, ttl),
        )

    async def leave(self, key: str, call_id: str) -> None:
        # Both: the call may have entered on either side of an outage's start or end.
        await self._fallback.leave(key, call_id)
        await self._either(lambda: self._primary.leave(key, call_id), _nothing)

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._primary.close()
        await self._fallback.close()


async def _nothing() -> None:
    return None


class LatencyWindows:
    """Recent attempts per deployment, a true sliding window: the last `size` samples that are
    at most `max_age` seconds old. Kept per worker (each worker measures its own path to a
    deployment).

    A success is a sample of its latency. A failed attempt that says the deployment is unwell
    (`failed`) is a sample of its time too (a timeout: the whole timeout), marked as a failure:
    the latency strategy ranks a deployment with fewer failures in its window first, so a
    failing deployment stays behind every healthy one for as long as its window holds the
    failure. A deployment whose samples all aged out counts as unmeasured again, and is probed
    again, by one call at a time (`probe`): other calls leave it to that call and go elsewhere.
    """

    def __init__(
        self, *, size: int = 10, max_age: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._size = max(1, size)
        self._max_age = max_age
        self._clock = clock
        # (time, seconds, failed) per deployment key, oldest first.
        self._samples: dict[str, deque[tuple[float, float, bool]]] = {}
        self._probes: dict[str, float] = {}  # deployment key -> when its probe's claim lapses

    def configure(self, *, size: int, max_age: float) -> None:
        """New window limits (a reloaded `routing_strategy_args`), keeping the newest samples."""
        self._size = max(1, size)
        self._max_age = max_age
        for key, samples in self._samples.items():
            if samples.maxlen != self._size:
                self._samples[key] = deque(samples, maxlen=self._size)

    def record(self, key: str, seconds: float) -> None:
        """A successful attempt that took `seconds`."""
        self._add(key, seconds, False)

    def failed(self, key: str, error: AttemptError, timeout: float) -> None:
        """An attempt failed with `error` (its deadline was `timeout` seconds). A timeout, a
        connection or TLS failure, a 5xx or 408, an unreadable answer, a 401/403/404 (every
        failure that counts towards a cooldown) is a penalty sample; a 429 (cooled down for its
        Retry-After instead) and the request's own 4xx are none."""
        if error.counts and error.kind is not ErrorKind.RATE_LIMIT:
            seconds = timeout if error.timed_out else (error.elapsed or 0.0)
            self._add(key, seconds, True)
        elif self._probes:
            self._probes.pop(key, None)

    def _add(self, key: str, seconds: float, failed: bool) -> None:
        samples = self._samples.get(key)
        if samples is None:
            samples = self._samples[key] = deque(maxlen=self._size)
        samples.append((self._clock(), seconds, failed))
        if self._probes:
            self._probes.pop(key, None)  # measured: no probe needed any more

    def _window(self, key: str, now: float) -> deque[tuple[float, float, bool]] | None:
        samples = self._samples.get(key)
        if not samples:
            return None
        oldest = now - self._max_age
        while samples and samples[0][0] < oldest:
            samples.popleft()
        return samples or None

    def recent(self, key: str) -> float | None:
        """Mean of the window (failed attempts included), or None when nothing is recent."""
        samples = self._window(key, self._clock())
        if samples is None:
            return None
        return sum(sample[1] for sample in samples) / len(samples)

    def failures(self, key: str) -> int:
        """Failed attempts in the window."""
        samples = self._window(key, self._clock())
        return sum(sample[2] for sample in samples) if samples else 0

    def probe(self, key: str, seconds: float) -> None:
        """A call is about to try `key`. When nothing recent is known of it and no other call
        is probing it, this call is its probe, for at most `seconds` (its attempt's deadline;
        the claim ends sooner with the attempt's outcome)."""
        now = self._clock()
        if self._window(key, now) is None and self._probes.get(key, 0.0) <= now:
            self._probes[key] = now + seconds

    def usage(self, usage: Mapping[str, DeploymentUsage]) -> dict[str, DeploymentUsage]:
        """`usage` with each deployment's latency, failures and probing added."""
        now = self._clock()
        probes = self._probes
        merged: dict[str, DeploymentUsage] = {}
        for key, used in usage.items():
            samples = self._window(key, now)
            if samples is None:
                probing = bool(probes) and probes.get(key, 0.0) > now
                merged[key] = DeploymentUsage(used.in_flight, used.rpm, used.tpm, None, 0, probing)
                continue
            total = 0.0
            failures = 0
            for _, seconds, failed in samples:
                total += seconds
                failures += failed
            merged[key] = DeploymentUsage(
                used.in_flight, used.rpm, used.tpm, total / len(samples), failures
            )
        return merged
