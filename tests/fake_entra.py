"""A loopback stand-in for Microsoft Entra ID's token endpoint, over HTTPS (azure-identity only
talks to an https authority): `POST /{tenant}/oauth2/v2.0/token` with the client-credentials
grant, answering tokens shaped like Entra's (JWTs) or scripted failures."""

from __future__ import annotations

import base64
import itertools
import ssl
from pathlib import Path
from typing import Any

import orjson
import trustme
from aiohttp import web

from tests.loopback_app import LoopbackApp


def _jwt(number: int) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part({'sub': 'worker', 'n': number})}.c2ln"


class FakeEntra:
    """`async with FakeEntra(tmp_path) as entra:`; `entra.authority` for `authority_host`,
    `entra.ca_path` for the CA bundle that trusts it."""

    def __init__(self, directory: Path, *, expires_in: int = 3600, opaque: bool = False) -> None:
        """`opaque`: tokens of no recognisable shape (not JWTs), as some identity providers
        issue them."""
        self._ca = trustme.CA()
        self.ca_path = directory / "entra-ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_path))
        self.expires_in = expires_in
        self.opaque = opaque
        self.status = 200
        self.requests: list[dict[str, str]] = []
        self.issued: list[str] = []
        self._numbers = itertools.count(1)
        self._served: LoopbackApp | None = None
        self.port = 0

    @property
    def authority(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.requests.append(
            {"tenant": request.match_info["tenant"], **{k: str(v) for k, v in form.items()}}
        )
        if self.status != 200:
            error = {"error": "invalid_client", "error_description": "AADSTS7000215: bad secret"}
            return web.json_response(error, status=self.status)
        number = next(self._numbers)
        token = f"entra-opaque-token-{number}-7d0e5b" if self.opaque else _jwt(number)
        self.issued.append(token)
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": self.expires_in,
                "ext_expires_in": self.expires_in,
                "access_token": token,
            }
        )

    async def __aenter__(self) -> FakeEntra:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ca.issue_cert("127.0.0.1").configure_cert(context)
        app = web.Application()
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        self._served = await LoopbackApp(app, ssl_context=context).__aenter__()
        self.port = self._served.port
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._served is not None:
            await self._served.__aexit__()
