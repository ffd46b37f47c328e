"""What a deployment's tokens cost, for cost-based-routing.

A deployment's own `input_cost_per_token`/`output_cost_per_token` win. Otherwise its model's
price comes from the price table, `prices.json` next to this module: litellm's
`model_prices_and_context_window.json` (the copy its package ships) cut down to the chat and
text-completion models of the providers the gateway speaks natively, each entry under litellm's
own key. The file names its litellm version and the day it was taken;
`python -m tests.price_table` regenerates it from an installed litellm.

Lookup, per provider (litellm looks up the deployment's full `<prefix>/<model>` string, which
misses every `openai/…` entry, so in Rasa most OpenAI deployments go unpriced):

- openai: the model (`ft:<base>` for a fine-tune of a known base model);
- azure: `azure/<model>` when the deployment names its model, then `azure/<deployment>`;
- bedrock: `bedrock/<aws_region_name>/<model id>` (regional prices differ), then the model id
  (the last part of an ARN);
- ollama: `ollama/<model>`, then without its `:tag`;
- self-hosted, litellm_proxy, rasa: none (the model is the server's own name for it).

A half that neither the deployment nor the table prices counts 0; a deployment priced by
neither is unpriced (None), which cost-based-routing ranks after every priced one, and which
start-up and `validate` warn about.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from worker.llm.model_group import Deployment
from worker.llm.providers import model_name

PRICES_FILE = Path(__file__).with_name("prices.json")


@dataclass(frozen=True)
class PriceTable:
    source: str  # the litellm release and file the prices were taken from
    extracted: str  # the day they were taken (ISO date)
    prices: Mapping[str, tuple[float, float]]  # litellm key -> (input, output) per token


@functools.cache
def price_table() -> PriceTable:
    data = json.loads(PRICES_FILE.read_text(encoding="utf-8"))
    prices = {key: (float(pair[0]), float(pair[1])) for key, pair in data["prices"].items()}
    return PriceTable(source=data["source"], extracted=data["extracted"], prices=prices)


def table_keys(deployment: Deployment) -> list[str]:
    """The price table keys that may price `deployment`, in the order they are tried."""
    provider = deployment.provider
    model = model_name(deployment)
    if provider == "openai" and model:
        parts = model.split(":")
        return [model, f"ft:{parts[1]}"] if parts[0] == "ft" and len(parts) > 2 else [model]
    if provider == "azure":
        names = [model, deployment.deployment]
        return [f"azure/{name}" for name in dict.fromkeys(names) if name]
    if provider == "bedrock" and model:
        model_id = model.rsplit("/", 1)[-1] if model.startswith("arn:") else model
        region = deployment.aws_region_name
        return [f"bedrock/{region}/{model_id}", model_id] if region else [model_id]
    if provider == "ollama" and model:
        untagged = model.split(":", 1)[0]
        return [f"ollama/{name}" for name in dict.fromkeys([model, untagged])]
    return []


def table_price(deployment: Deployment) -> tuple[float, float] | None:
    """(input, output) per token from the price table, or None when it has no entry."""
    prices = price_table().prices
    for key in table_keys(deployment):
        found = prices.get(key)
        if found is not None:
            return found
    return None


def deployment_prices(deployment: Deployment) -> tuple[float, float] | None:
    """(input, output) per token as cost-based-routing counts them; None when unpriced."""
    given = (deployment.input_cost_per_token, deployment.output_cost_per_token)
    if given[0] is not None and given[1] is not None:
        return (given[0], given[1])
    table = table_price(deployment)
    if table is None and given == (None, None):
        return None
    known = table or (0.0, 0.0)
    return (
        given[0] if given[0] is not None else known[0],
        given[1] if given[1] is not None else known[1],
    )


def unpriced_warning(deployment: Deployment) -> str | None:
    """What start-up and `validate` say about a deployment cost-based-routing cannot price."""
    if deployment_prices(deployment) is not None:
        return None
    table = price_table()
    return (
        f"cost-based-routing has no price for deployment {deployment.name!r}: it sets no "
        f"input_cost_per_token/output_cost_per_token and its model is not in the price table "
        f"({table.source}); it is tried only after every priced deployment. Set both keys "
        f"to rank it by its price"
    )
