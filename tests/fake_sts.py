"""A loopback stand-in for AWS STS (the query protocol botocore speaks): `AssumeRole` and
`AssumeRoleWithWebIdentity` answered with XML as STS answers them, each answer fresh temporary
credentials that the fake LLM then accepts (FakeLLMServer.add_bedrock_credentials), so a
Bedrock call signed with them passes its SigV4 check and one signed with anything else fails.

`lifetime` is how long the credentials it issues live; `status` other than 200 answers every
request with an STS error; `hold()` keeps requests waiting until `release()`."""

from __future__ import annotations

import asyncio
import itertools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from xml.sax.saxutils import escape

from aiohttp import web

from tests.loopback_app import LoopbackApp
from worker.fake_llm import FakeLLMServer

NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
_CREDENTIAL = re.compile(r"Credential=([A-Z0-9]+)/")


@dataclass(frozen=True)
class StsRequest:
    action: str
    params: dict[str, str]
    signed_by: str | None  # the access key of the SigV4 signature (AssumeRole), None: unsigned


@dataclass(frozen=True)
class Issued:
    access_key: str
    secret_key: str
    session_token: str


class FakeSts:
    def __init__(self, llm: FakeLLMServer, *, lifetime: float = 3600.0) -> None:
        self._llm = llm
        self.lifetime = lifetime
        self.status = 200
        self.requests: list[StsRequest] = []
        self.issued: list[Issued] = []
        self.arrived = asyncio.Event()  # set by each request
        self._open = asyncio.Event()
        self._open.set()
        self._numbers = itertools.count(1)
        self._served: LoopbackApp | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def _handle(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        signed = _CREDENTIAL.search(request.headers.get("Authorization", ""))
        action = form.get("Action", "")
        self.requests.append(StsRequest(action, form, signed.group(1) if signed else None))
        self.arrived.set()
        await self._open.wait()
        if self.status != 200:
            return _error(self.status, "ServiceUnavailable", "scripted STS failure")
        if action not in ("AssumeRole", "AssumeRoleWithWebIdentity"):
            return _error(400, "InvalidAction", f"Could not find operation {action}")
        if action == "AssumeRoleWithWebIdentity" and not form.get("WebIdentityToken"):
            return _error(400, "InvalidIdentityToken", "No token")
        number = next(self._numbers)
        issued = Issued(
            f"ASIAFAKESTS{number:08d}",
            f"sts-secret-{number}-0f1e2d3c4b5a69788796a5b4c3d2e1f0",
            f"sts-session-token-{number}-IQoJb3JpZ2luX2VjEJr",
        )
        self.issued.append(issued)
        self._llm.add_bedrock_credentials(
            issued.access_key, issued.secret_key, issued.session_token
        )
        expires = datetime.now(UTC) + timedelta(seconds=self.lifetime)
        session = escape(form.get("RoleSessionName", "session"))
        body = f"""<{action}Response xmlns="{NAMESPACE}">
  <{action}Result>
    <AssumedRoleUser>
      <AssumedRoleId>AROAFAKEROLE:{session}</AssumedRoleId>
      <Arn>arn:aws:sts::123456789012:assumed-role/bedrock-caller/{session}</Arn>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>{issued.access_key}</AccessKeyId>
      <SecretAccessKey>{issued.secret_key}</SecretAccessKey>
      <SessionToken>{issued.session_token}</SessionToken>
      <Expiration>{expires.strftime("%Y-%m-%dT%H:%M:%SZ")}</Expiration>
    </Credentials>
    <PackedPolicySize>6</PackedPolicySize>
  </{action}Result>
  <ResponseMetadata><RequestId>{number:08d}-fake</RequestId></ResponseMetadata>
</{action}Response>"""
        return web.Response(text=body, content_type="text/xml")

    async def __aenter__(self) -> FakeSts:
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._served = await LoopbackApp(app).__aenter__()
        self.port = self._served.port
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
        if self._served is not None:
            await self._served.__aexit__()


def _error(status: int, code: str, message: str) -> web.Response:
    body = (
        f'<ErrorResponse xmlns="{NAMESPACE}"><Error><Type>Sender</Type><Code>{code}</Code>'
        f"<Message>{escape(message)}</Message></Error><RequestId>fake</RequestId></ErrorResponse>"
    )
    return web.Response(text=body, status=status, content_type="text/xml")
