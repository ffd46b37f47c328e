"""The price table of cost-based-routing: litellm's prices for the native providers' models."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from tests.price_table import extract, render
from worker.llm.model_group import Deployment
from worker.llm.prices import (
    PRICES_FILE,
    deployment_prices,
    price_table,
    table_keys,
    table_price,
    unpriced_warning,
)


def deployment(provider: str, **keys: Any) -> Deployment:
    return Deployment.model_validate({"provider": provider, **keys})


def test_the_table_names_its_source_and_date_and_holds_prices_per_token() -> None:
    table = price_table()
    assert re.fullmatch(r"litellm \d+\.\d+\.\d+, litellm/model_prices\S+\.json", table.source)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", table.extracted)
    assert len(table.prices) > 100
    for key, (input_cost, output_cost) in table.prices.items():
        assert math.isfinite(input_cost) and input_cost >= 0, key
        assert math.isfinite(output_cost) and output_cost >= 0, key
        assert input_cost < 1e-2 and output_cost < 1e-2, key  # per token, not per million
    # Every native provider with priced models is there.
    assert {"gpt-4o-mini", "azure/gpt-4o-mini", "ollama/llama3"} <= set(table.prices)
    assert any(key.startswith("bedrock/") for key in table.prices)
    assert any(key.startswith(("anthropic.", "amazon.nova")) for key in table.prices)


def test_the_committed_file_is_in_the_generators_form() -> None:
    # Regenerating from the same litellm release changes nothing but what litellm changed.
    table = price_table()
    prices = {key: list(pair) for key, pair in table.prices.items()}
    rendered = render(prices, source=table.source, extracted=table.extracted)
    assert PRICES_FILE.read_text(encoding="utf-8") == rendered


def test_the_generator_keeps_chat_and_completion_models_of_the_native_providers() -> None:
    def entry(provider: str, mode: str = "chat", **costs: Any) -> dict[str, Any]:
        priced = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
        return {"litellm_provider": provider, "mode": mode, **priced, **costs}

    litellm = {
        "sample_spec": {"litellm_provider": "one of …", "mode": "one of …"},
        "gpt-4o": entry("openai"),
        "gpt-3.5-turbo-instruct": entry("text-completion-openai", "completion"),
        "text-embedding-3-small": entry("openai", "embedding"),
        "gpt-image-1": entry("openai", "image_generation"),
        "azure/gpt-4o": entry("azure"),
        "azure/eu/gpt-4o": entry("azure"),  # a data zone: not what a deployment names
        "anthropic.claude-3-5-haiku-20241022-v1:0": entry("bedrock_converse"),
        "bedrock/eu-west-3/mistral.mistral-large-2402-v1:0": entry("bedrock"),
        "bedrock/us-east-1/1-month-commitment/cohere.command-text-v14": entry("bedrock"),
        "bedrock/*/6-month-commitment/cohere.command-text-v14": entry("bedrock"),
        "ollama/llama3": entry("ollama", input_cost_per_token=0.0, output_cost_per_token=0.0),
        "claude-3-5-haiku-20241022": entry("anthropic"),  # through litellm, not native
        "gpt-4o-no-output": entry("openai", output_cost_per_token=None),
        "gpt-4o-bool": entry("openai", input_cost_per_token=True),
        "gpt-4o-inf": entry("openai", input_cost_per_token=float("inf")),
    }
    assert list(extract(litellm)) == [
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        "azure/gpt-4o",
        "bedrock/eu-west-3/mistral.mistral-large-2402-v1:0",
        "gpt-3.5-turbo-instruct",
        "gpt-4o",
        "ollama/llama3",
    ]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"provider": "openai", "model": "gpt-4o-mini"}, ["gpt-4o-mini"]),
        ({"provider": "openai", "model": "openai/gpt-4o-mini"}, ["gpt-4o-mini"]),
        (
            {"provider": "openai", "model": "ft:gpt-4o-mini-2024-07-18:acme::9abc"},
            ["ft:gpt-4o-mini-2024-07-18:acme::9abc", "ft:gpt-4o-mini-2024-07-18"],
        ),
        ({"provider": "azure", "deployment": "prod-fr"}, ["azure/prod-fr"]),
        (
            {"provider": "azure", "deployment": "prod-fr", "model": "gpt-4o"},
            ["azure/gpt-4o", "azure/prod-fr"],
        ),
        (
            {"provider": "bedrock", "model": "bedrock/amazon.nova-lite-v1:0"},
            ["amazon.nova-lite-v1:0"],
        ),
        (
            {
                "provider": "bedrock",
                "model": "amazon.nova-lite-v1:0",
                "aws_region_name": "eu-west-3",
            },
            ["bedrock/eu-west-3/amazon.nova-lite-v1:0", "amazon.nova-lite-v1:0"],
        ),
        (
            {
                "provider": "bedrock",
                "model": "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0",
            },
            ["amazon.nova-lite-v1:0"],
        ),
        ({"provider": "ollama", "model": "llama3:8b"}, ["ollama/llama3:8b", "ollama/llama3"]),
        ({"provider": "self-hosted", "model": "gpt-4o", "api_base": "http://gpu/v1"}, []),
        ({"provider": "litellm_proxy", "model": "gpt-4o", "api_base": "http://proxy"}, []),
        ({"provider": "rasa", "model": "rasa/command-generator", "api_base": "http://r"}, []),
    ],
)
def test_table_keys_per_provider(keys: dict[str, Any], expected: list[str]) -> None:
    assert table_keys(Deployment.model_validate(keys)) == expected


def test_table_price_tries_the_region_then_the_model() -> None:
    table = price_table().prices
    regional = next(k for k in table if k.startswith("bedrock/") and k.split("/")[2] in table)
    _, region, model_id = regional.split("/")
    here = deployment("bedrock", model=model_id, aws_region_name=region)
    assert table_price(here) == table[regional]
    elsewhere = deployment("bedrock", model=model_id, aws_region_name="xx-nowhere-1")
    assert table_price(elsewhere) == table[model_id]
    assert table_price(deployment("azure", deployment="gpt-4o-mini")) == table["azure/gpt-4o-mini"]


def test_explicit_prices_win_and_a_deployment_priced_by_neither_is_unpriced() -> None:
    table = price_table().prices
    mini = deployment("openai", model="gpt-4o-mini")
    assert deployment_prices(mini) == table["gpt-4o-mini"]
    assert unpriced_warning(mini) is None
    own = deployment("openai", model="gpt-4o-mini", input_cost_per_token=0.0)
    assert deployment_prices(own) == (0.0, table["gpt-4o-mini"][1])
    written = deployment("self-hosted", model="llama", api_base="http://gpu/v1")
    assert deployment_prices(written) is None
    warning = unpriced_warning(written)
    assert warning is not None
    assert "'llama'" in warning and "input_cost_per_token" in warning
    assert price_table().source in warning
    half = written.model_copy(update={"output_cost_per_token": 2e-6})
    assert deployment_prices(half) == (0.0, 2e-6)
