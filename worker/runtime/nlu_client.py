"""Rasa's external NLU server (`nlu:` in endpoints.yml): POST {url}/model/parse."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import aiohttp
from pydantic import ValidationError

from contracts.models import ParseData

log = logging.getLogger(__name__)


class NluServer:
    """Asks a Rasa NLU server for the intent of a message that arrived without `parse_data`.

    Like Rasa's RasaNLUHttpInterpreter, a failure yields no parse result (the router then treats
    the message as having no intent), but only after `retries` further attempts with backoff.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        token_name: str = "token",
        timeout: float = 5.0,
        retries: int = 2,
    ) -> None:
        self._endpoint = url.rstrip("/") + "/model/parse"
        self._params = {token_name: token} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retries = retries
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"NluServer({self._endpoint!r})"

    async def parse(self, text: str, message_id: str) -> ParseData | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body: dict[str, Any] = {"text": text, "message_id": message_id}
        for attempt in range(self._retries + 1):
            try:
                async with self._session.post(
                    self._endpoint, json=body, params=self._params
                ) as response:
                    if response.status >= 500 and attempt < self._retries:
                        raise aiohttp.ClientResponseError(
                            response.request_info, (), status=response.status
                        )
                    response.raise_for_status()
                    return ParseData.model_validate_json(await response.read())
            except (aiohttp.ClientError, TimeoutError, ValidationError) as exc:
                if isinstance(exc, ValidationError) or attempt == self._retries:
                    log.error(
                        "NLU server %s failed for message %s: %s",
                        self._endpoint,
                        message_id,
                        type(exc).__name__,
                    )
                    return None
                await asyncio.sleep(0.1 * 2**attempt * (1 + random.random()))
        return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
