"""The LLMBasedRouter's call to its model group: an answer for `decide_by_llm`, never an error."""

from __future__ import annotations

import logging
import time

from contracts.models import LlmCall
from worker.llm.errors import GatewayError
from worker.llm.gateway import ModelGroupGateway

log = logging.getLogger(__name__)


async def ask_router(gateway: ModelGroupGateway, prompt: str) -> tuple[str | None, LlmCall, bool]:
    """(answer, the routing block's `llm`, failed). LLM trouble of any kind is `failed=True`
    with the attempts made, so the worker routes NLU sticky (Rasa's behaviour). `model_group`
    and `deployment` name the group that answered (a fallback, when one did) or was tried
    last, and its deployment; `attempts` counts those of every group tried."""
    started = time.monotonic()
    try:
        completion = await gateway.complete(prompt)
    except GatewayError as error:
        log.warning("LLMBasedRouter: no answer from model group: %s", error)
        call = LlmCall(
            model_group=error.last_group,
            deployment=error.deployment,
            answer=None,
            attempts=error.attempts,
            latency_ms=round((time.monotonic() - started) * 1000),
        )
        return None, call, True
    except Exception as error:  # noqa: BLE001 - a routing decision must never be lost to a bug
        # The exception text may come from anywhere: only its type is logged.
        log.exception("LLMBasedRouter: unexpected %s from the gateway", type(error).__name__)
        call = LlmCall(
            model_group=gateway.group_id,
            latency_ms=round((time.monotonic() - started) * 1000),
        )
        return None, call, True
    call = LlmCall(
        model_group=completion.group or gateway.group_id,
        deployment=completion.deployment,
        answer=completion.text,
        attempts=completion.attempts,
        latency_ms=completion.latency_ms,
    )
    return completion.text, call, False
