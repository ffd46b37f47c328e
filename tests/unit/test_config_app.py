"""config.yml + endpoints.yml + flows together: LLM resolution, references, all problems."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import SecretStr

from worker.config.app_config import (
    INLINE_GROUP_ID,
    AppConfig,
    ConfigPaths,
    load_app_config,
    reload_app_config,
    validate_files,
)
from worker.config.errors import ConfigError
from worker.llm.gateway import DEFAULT_TIMEOUT
from worker.llm.router_defaults import router_params
from worker.rasa.releases import rasa_version
from worker.routing.router_config import IntentBasedRouterConfig, LLMBasedRouterConfig

FIXTURES = Path(__file__).parent.parent / "fixtures" / "config"

LLM_ROUTER = """
pipeline:
  - name: LLMBasedRouter
    calm_entry: {{sticky: handles transfers}}
{llm}
  - name: NLUCommandAdapter
{others}
"""
GENERATOR_WITH_GROUP = """
  - name: CompactLLMCommandGenerator
    llm:
      model_group: commands
"""
ENDPOINTS = """
model_groups:
  - id: router-llm
    models:
      - provider: openai
        model: gpt-4o-mini
        api_key: ${OPENAI_API_KEY}
      - provider: self-hosted
        model: meta-llama/Llama-3.1-8B-Instruct
        api_base: ${VLLM_BASE}
    router:
      routing_strategy: simple-shuffle
  - id: commands
    models:
      - provider: openai
        model: gpt-4o
        api_key: ${OPENAI_API_KEY}
"""
ENVIRON = {"OPENAI_API_KEY": "openai-key-value", "VLLM_BASE": "http://vllm:8000/v1"}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(name: str, text: str) -> Path:
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def llm_config(llm: str = "", others: str = "") -> Path:
    return write("config.yml", LLM_ROUTER.format(llm=llm, others=others))


def load(config: Path, endpoints: Path, environ: dict[str, str] | None = None) -> AppConfig:
    return load_app_config(config, endpoints, None, ENVIRON if environ is None else environ)


def problems_of(config: Path, endpoints: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(config, endpoints, environ)
    return caught.value.problems


def test_intent_router_app_config(workdir: Path) -> None:
    endpoints = write(
        "endpoints.yml",
        ENDPOINTS + "  - id: embeddings\n    models: [{provider: ollama, model: nomic}]\n",
    )
    flows = FIXTURES / "flows"
    app = load_app_config(FIXTURES / "config_intent.yml", endpoints, flows, ENVIRON)
    assert isinstance(app.router, IntentBasedRouterConfig)
    assert app.llm_group is None
    # The four flows of the fixtures, then Rasa 3.11's patterns with an NLU trigger.
    assert [flow.id for flow in app.flows] == [
        "block_card",
        "replace_card",
        "transfer_money",
        "add_payee",
        "pattern_restart",
        "pattern_session_start",
        "pattern_user_silence",
    ]
    assert set(app.endpoints.model_groups) == {"router-llm", "commands", "embeddings"}
    assert app.paths == ConfigPaths(FIXTURES / "config_intent.yml", endpoints, flows)


def test_intent_router_still_needs_every_referenced_group(workdir: Path) -> None:
    endpoints = write("endpoints.yml", ENDPOINTS)
    with pytest.raises(ConfigError) as caught:
        load_app_config(FIXTURES / "config_intent.yml", endpoints, None, ENVIRON)
    config = str(FIXTURES / "config_intent.yml")
    assert caught.value.problems == [
        f"{config}: pipeline[5] (CompactLLMCommandGenerator).flow_retrieval.embeddings.model_group:"
        " model group embeddings is not defined in endpoints.yml"
    ]


def test_llm_router_with_model_group(workdir: Path) -> None:
    app = load(llm_config("    llm: {model_group: router-llm}"), write("endpoints.yml", ENDPOINTS))
    assert isinstance(app.router, LLMBasedRouterConfig)
    assert app.llm_group is not None
    assert app.llm_group.id == "router-llm"
    assert [m.name for m in app.llm_group.models] == [
        "gpt-4o-mini",
        "meta-llama/Llama-3.1-8B-Instruct",
    ]


def test_missing_referenced_group_names_file_component_and_group(workdir: Path) -> None:
    config = llm_config("    llm: {model_group: router-llm-eu}")
    assert problems_of(config, write("endpoints.yml", ENDPOINTS)) == [
        "config.yml: pipeline[0] (LLMBasedRouter).llm.model_group: model group router-llm-eu is "
        "not defined in endpoints.yml"
    ]


def test_model_group_with_model_keys_is_refused(workdir: Path) -> None:
    config = llm_config("    llm: {model_group: router-llm, model: gpt-4o, temperature: 0.2}")
    assert problems_of(config, write("endpoints.yml", ENDPOINTS)) == [
        "config.yml: pipeline[0] (LLMBasedRouter).llm: model_group cannot be combined with model "
        "keys (model, temperature); reference a group of endpoints.yml or define the model "
        "inline, not both"
    ]


def test_inline_llm_loads_with_a_deprecation_warning(
    workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = llm_config("    llm: {provider: openai, model: gpt-4o-mini, temperature: 0.1}")
    with (
        pytest.warns(DeprecationWarning, match="inline llm config is deprecated"),
        caplog.at_level(logging.WARNING, logger="worker.config.app_config"),
    ):
        app = load(config, write("endpoints.yml", ""))
    assert "inline llm config is deprecated" in caplog.text
    group = app.llm_group
    assert group is not None
    assert group.id == INLINE_GROUP_ID
    [model] = group.models
    assert (model.provider, model.model) == ("openai", "gpt-4o-mini")
    assert model.extra_body() == {"temperature": 0.1}
    # Rasa merges its defaults into an inline config of the same provider; the user's win. Rasa
    # 3.11.14+ sends max_completion_tokens (llm_based_router.py, openai_client_config.py).
    assert router_params(model) == {
        "temperature": 0.1,
        "max_completion_tokens": 1,
        "logit_bias": {"362": 100, "426": 100, "356": 100},
    }
    # The release's timeout (7 s) is the gateway's, not a key of the deployment.
    assert model.timeout is None and DEFAULT_TIMEOUT == 7
    # Like Rasa <= 3.10, the key comes from OPENAI_API_KEY.
    assert model.api_key == SecretStr("openai-key-value")


def test_inline_llm_of_another_provider_gets_no_openai_defaults(workdir: Path) -> None:
    config = llm_config("    llm: {provider: ollama, model: llama3.1, api_base: http://o:11434}")
    with pytest.warns(DeprecationWarning):
        app = load(config, write("endpoints.yml", ""))
    assert app.llm_group is not None
    [model] = app.llm_group.models
    assert (model.provider, model.api_key, model.extra_body()) == ("ollama", None, {})


def test_inline_llm_with_a_key_is_refused(workdir: Path) -> None:
    # Rasa 3.11.20 engine/validation.py validate_model_client_configuration_setup_during_
    # training_time: any secret key in an inline llm config, a reference too.
    config = llm_config("    llm: {provider: openai, model: gpt-4o-mini, api_key: sk-abc}")
    with pytest.warns(DeprecationWarning):
        problems = problems_of(config, write("endpoints.yml", ""))
    assert problems == [
        "config.yml: pipeline[0] (LLMBasedRouter).llm.api_key: is not allowed in config.yml "
        "(Rasa refuses secrets there): it is read from the environment (OPENAI_API_KEY, "
        "AZURE_API_KEY, …)"
    ]


def test_inline_llm_mixed_with_model_group_references_is_refused(workdir: Path) -> None:
    config = llm_config("    llm: {provider: openai, model: gpt-4o-mini}", GENERATOR_WITH_GROUP)
    assert problems_of(config, write("endpoints.yml", ENDPOINTS)) == [
        "config.yml: pipeline[0] (LLMBasedRouter).llm: inline llm config mixed with model_group "
        "references (pipeline[2] (CompactLLMCommandGenerator).llm); move this model into a group "
        "of endpoints.yml"
    ]


def test_no_llm_uses_rasa_default(workdir: Path) -> None:
    app = load(llm_config(), write("endpoints.yml", ""))
    assert app.llm_group is not None
    assert app.llm_group.id == INLINE_GROUP_ID
    [model] = app.llm_group.models
    assert (model.provider, model.model, model.extra_body()) == ("openai", "gpt-3.5-turbo", {})
    assert router_params(model) == {
        "temperature": 0.0,
        "max_completion_tokens": 1,
        "logit_bias": {"362": 100, "426": 100, "356": 100},
    }
    assert model.timeout is None and DEFAULT_TIMEOUT == 7
    assert model.api_key == SecretStr("openai-key-value")


@pytest.mark.parametrize(
    ("version", "model"),
    [("3.11.0", "gpt-3.5-turbo"), ("3.13", "gpt-4o-2024-11-20"), ("3.21", "gpt-5-mini-2025-08-07")],
)
def test_no_llm_uses_the_default_model_of_the_release(
    workdir: Path, version: str, model: str
) -> None:
    # llm_based_router.py DEFAULT_LLM_CONFIG / shared/utils/llm.py of each release.
    app = load_app_config(
        llm_config(), write("endpoints.yml", ""), None, ENVIRON, rasa=rasa_version(version)
    )
    assert app.llm_group is not None
    assert [m.model for m in app.llm_group.models] == [model]


def test_default_llm_without_openai_key(workdir: Path) -> None:
    assert problems_of(llm_config(), write("endpoints.yml", ""), {}) == [
        "config.yml: pipeline[0] (LLMBasedRouter): has no llm, so Rasa Pro 3.11.20's default "
        "(openai gpt-3.5-turbo) is used, which needs environment variable OPENAI_API_KEY: it is "
        "not set"
    ]


def test_every_problem_of_every_file_is_collected(workdir: Path) -> None:
    config = llm_config("    llm: {model_group: router-llm}", GENERATOR_WITH_GROUP)
    endpoints = write("endpoints.yml", ENDPOINTS.replace("${VLLM_BASE}", "${VLLM}"))
    write(
        "flows.yml",
        "flows:\n  pay:\n    description: p\n    steps: [{action: a}]\n    nlu_trigger: pay\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_app_config(config, endpoints, Path("flows.yml"), ENVIRON)
    assert caught.value.problems == [
        "flows.yml: flows.pay.nlu_trigger: must be a non-empty list of `- intent: …` items",
        "endpoints.yml: model_groups[0] (id router-llm).models[1].api_base: environment variable "
        "VLLM is not set",
    ]
    assert "openai-key-value" not in str(caught.value)


def test_problems_of_config_and_endpoints_together(workdir: Path) -> None:
    config = write("config.yml", "pipeline:\n  - name: DIETClassifier\n")
    endpoints = write("endpoints.yml", "kafka:\n  partitions: -1\n")
    problems = problems_of(config, endpoints)
    assert problems == [
        "config.yml: pipeline: has no IntentBasedRouter or LLMBasedRouter; add exactly one of them",
        "endpoints.yml: kafka.partitions: Input should be greater than or equal to 1",
    ]


def test_reload_reads_the_same_files_again(workdir: Path) -> None:
    config = llm_config("    llm: {model_group: router-llm}")
    endpoints = write("endpoints.yml", ENDPOINTS)
    app = load(config, endpoints)
    write("endpoints.yml", ENDPOINTS.replace("simple-shuffle", "least-busy"))
    reloaded = reload_app_config(app, ENVIRON)
    assert reloaded.llm_group is not None
    assert reloaded.llm_group.settings.routing_strategy == "least-busy"
    write("endpoints.yml", ENDPOINTS.replace("router-llm", "renamed"))
    with pytest.raises(ConfigError):
        reload_app_config(app, ENVIRON)


def test_validate_files_with_two_endpoints_files_that_differ(workdir: Path) -> None:
    config = llm_config("    llm: {model_group: router-llm}", GENERATOR_WITH_GROUP)
    dev = write("endpoints.dev.yml", ENDPOINTS)
    prod = write(
        "endpoints.prod.yml",
        ENDPOINTS.replace("  - id: commands", "  - id: commands-prod")
        + "  - id: embeddings\n    models: [{provider: ollama, model: nomic}]\n",
    )
    assert validate_files(config, [dev, prod], None, ENVIRON) == [
        "config.yml: pipeline[2] (CompactLLMCommandGenerator).llm.model_group: model group "
        "commands is not defined in endpoints.prod.yml",
        "endpoints.dev.yml: model_groups: lacks group id commands-prod, defined in "
        "endpoints.prod.yml",
        "endpoints.dev.yml: model_groups: lacks group id embeddings, defined in endpoints.prod.yml",
        "endpoints.prod.yml: model_groups: lacks group id commands, defined in endpoints.dev.yml",
    ]


def test_validate_files_reports_unset_variables_of_each_file(workdir: Path) -> None:
    config = llm_config("    llm: {model_group: router-llm}")
    dev = write("dev/endpoints.yml", ENDPOINTS)
    prod = write("prod/endpoints.yml", ENDPOINTS)
    problems = validate_files(config, [dev, prod], None, {"OPENAI_API_KEY": "k"})
    assert problems == [
        "dev/endpoints.yml: model_groups[0] (id router-llm).models[1].api_base: environment "
        "variable VLLM_BASE is not set",
        "prod/endpoints.yml: model_groups[0] (id router-llm).models[1].api_base: environment "
        "variable VLLM_BASE is not set",
    ]


def test_validate_files_valid(workdir: Path) -> None:
    config = llm_config("    llm: {model_group: router-llm}", GENERATOR_WITH_GROUP)
    dev = write("endpoints.dev.yml", ENDPOINTS)
    prod = write("endpoints.prod.yml", ENDPOINTS.replace("least-busy", "simple-shuffle"))
    assert validate_files(config, [dev, prod], FIXTURES / "flows", ENVIRON) == []


def test_validate_files_with_a_broken_config(workdir: Path) -> None:
    config = write("config.yml", "pipeline: [\n")
    problems = validate_files(config, [], None, {})
    assert problems[0] == "no endpoints file given"
    assert problems[1].startswith("config.yml:2: invalid YAML")


# gpt-4o-mini is in the price table, the self-hosted Llama is not, and sets no price.
COST_ENDPOINTS = ENDPOINTS.replace("simple-shuffle", "cost-based-routing")


def test_an_unpriced_deployment_of_cost_based_routing_is_warned_at_start_and_in_validate(
    workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = llm_config("    llm: {model_group: router-llm}")
    endpoints = write("endpoints.yml", COST_ENDPOINTS)
    with caplog.at_level(logging.WARNING, logger="worker.config.app_config"):
        app = load(config, endpoints)
    # (the other cost-based-routing warning is that of counters kept per worker, without Redis)
    [warning] = [w for w in app.warnings if "cost-based-routing has no price" in w]
    assert warning.startswith(
        "endpoints.yml: model_groups[0] (id router-llm).models[1]: cost-based-routing has no "
        "price for deployment 'meta-llama/Llama-3.1-8B-Instruct'"
    )
    assert "tried only after every priced deployment" in warning
    assert warning in caplog.text
    warnings: list[str] = []
    assert validate_files(config, [endpoints], None, ENVIRON, warnings=warnings) == []
    assert warning in warnings
    # Another strategy never looks at prices: nothing to say.
    shuffled = write("shuffle.yml", COST_ENDPOINTS.replace("cost-based-routing", "least-busy"))
    assert not [w for w in load(config, shuffled).warnings if "cost-based-routing" in w]


def test_the_rasa_version_also_selects_the_endpoints_rules(workdir: Path) -> None:
    # One selected release: its behaviour (the default model) and its endpoints rules (3.21.0's
    # shared/providers/model_group_validation.py wants a secret to be exactly `${VAR}`).
    config = llm_config("    llm: {model_group: router-llm}")
    endpoints = write("endpoints.yml", ENDPOINTS.replace("${OPENAI_API_KEY}", "${OPENAI_API_KEY}x"))
    app = load_app_config(config, endpoints, None, ENVIRON, rasa=rasa_version("3.20.5"))
    assert app.rasa == rasa_version("3.20.5")
    with pytest.raises(ConfigError) as caught:
        load_app_config(config, endpoints, None, ENVIRON, rasa=rasa_version("3.21.0"))
    assert caught.value.problems[0] == (
        "endpoints.yml: model_groups[0] (id router-llm).models[0].api_key: must be exactly ${VAR}: "
        "Rasa 3.21 refuses text around the reference"
    )
    warnings: list[str] = []
    problems = validate_files(
        config, [endpoints], None, ENVIRON, rasa=rasa_version("3.21.0"), warnings=warnings
    )
    assert problems == caught.value.problems
    # A reload reads the files as the same release.
    assert reload_app_config(app, ENVIRON).rasa == app.rasa
