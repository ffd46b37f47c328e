"""An aiohttp application served on a free loopback port, for the tests' stand-ins of remote
services (STS, echoing deployments): `async with LoopbackApp(app) as served:`."""

from __future__ import annotations

import ssl

from aiohttp import web


class LoopbackApp:
    def __init__(self, app: web.Application, *, ssl_context: ssl.SSLContext | None = None):
        self._app = app
        self._ssl_context = ssl_context
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> LoopbackApp:
        runner = web.AppRunner(self._app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self._ssl_context)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        self._runner = runner
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
