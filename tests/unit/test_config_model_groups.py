"""`model_groups` read as each Rasa Pro release reads them. Every case names the release and the
file of Rasa's wheel (or of the litellm it pins) it was checked against; paths are inside the
`rasa` (or `litellm`) package."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.config.endpoints import read_endpoints
from worker.config.endpoints_rules import (
    DEFAULT_RELEASE,
    RULES,
    UnknownRelease,
    markdown_table,
    rules_for,
)
from worker.llm.errors import ErrorKind
from worker.llm.model_group import ModelGroup
from worker.rasa.releases import Release, rasa_version

R3_11_13 = Release(3, 11, 13)
R3_11_20 = Release(3, 11, 20)
R3_12_42 = Release(3, 12, 42)
R3_13_13 = Release(3, 13, 13)
R3_14_28 = Release(3, 14, 28)
R3_21_0 = Release(3, 21, 0)
ENV = {"K": "key-value", "M": "gpt-4o-mini", "B": "http://llm.internal/v1", "RPM": "600"}


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def read(
    text: str, environ: dict[str, str] | None = None, release: Release = DEFAULT_RELEASE
) -> tuple[dict[str, ModelGroup], list[str], list[str]]:
    path = Path("endpoints.yml")
    path.write_text(text)
    result = read_endpoints(path, ENV if environ is None else environ, release=release)
    groups = result.endpoints.model_groups if result.endpoints is not None else {}
    # the problems without the file name, as `group path.key: message`
    return groups, [p.split(": ", 1)[1] for p in result.problems], result.warnings


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    quoted = re.fullmatch(r"__QVAR_(\w+)__", text)
    if quoted:
        return f"'${{{quoted.group(1)}}}'"
    return re.sub(r"__VAR_(\w+)__", r"${\1}", text)


def _block(value: dict[str, Any], indent: str) -> list[str]:
    lines = []
    for key, item in value.items():
        if isinstance(item, dict):
            lines.append(f"{indent}{key}:")
            lines.extend(_block(item, indent + "  "))
        elif isinstance(item, list):
            lines.append(f"{indent}{key}: [{', '.join(_scalar(v) for v in item)}]")
        else:
            lines.append(f"{indent}{key}: {_scalar(item)}")
    return lines


def as_block(flow: str) -> list[str]:
    """Models written as YAML flow mappings (readable in a table of cases), as the block YAML
    that lets `${VAR}` be a plain scalar (a flow mapping cannot hold one): `'${X}'` stays
    quoted, `${X}` plain."""
    text = re.sub(r"'\$\{(\w+)\}'", r"__QVAR_\1__", flow)
    text = re.sub(r"\$\{(\w+)\}", r"__VAR_\1__", text)
    lines = []
    for model in yaml.safe_load(f"[{text}]"):
        block = _block(model, "        ")
        lines.append("      - " + block[0].strip())
        lines.extend(block[1:])
    return lines


def one_model(model: str, router: str | None = None, extra: str = "") -> str:
    lines = [
        "model_groups:",
        "  - id: g",
        "    models:",
        *as_block(model.replace("\n      - ", ", ")),
    ]
    if router is not None:
        lines.append("    router:")
        lines.extend(f"      {line}" for line in router.strip().splitlines())
    return "\n".join(lines) + "\n" + extra


def model_of(text: str, **kw: Any) -> dict[str, Any]:
    groups, problems, _ = read(text, **kw)
    assert problems == [], problems
    deployment = groups["g"].models[0]
    return deployment.model_dump(exclude_none=True, exclude_defaults=True)


# ---- aliases (rasa/shared/providers/_configs/*_client_config.py, 3.11.20) -------------------


@pytest.mark.parametrize(
    ("written", "read_as"),
    [
        # OpenAIClientConfig
        ("{provider: openai, model_name: m, api_key: ${K}}", {"provider": "openai", "model": "m"}),
        ("{type: openai, model: m, api_key: ${K}}", {"provider": "openai", "model": "m"}),
        ("{_type: openai, model: m, api_key: ${K}}", {"provider": "openai", "model": "m"}),
        (
            "{provider: openai, model: m, openai_api_base: 'http://b', openai_api_version: v1, "
            "request_timeout: 9, openai_api_type: openai, api_key: ${K}}",
            {"provider": "openai", "model": "m", "api_base": "http://b", "api_version": "v1",
             "timeout": 9.0},
        ),
        # AzureOpenAIClientConfig: deployment_name / engine, and azure inferred from them
        (
            "{deployment_name: d, api_base: 'http://a', api_version: v, api_key: ${K}}",
            {"provider": "azure", "deployment": "d", "api_base": "http://a", "api_version": "v"},
        ),
        (
            "{engine: d, api_base: 'http://a', api_version: v, api_key: ${K}, api_type: azure}",
            {"provider": "azure", "deployment": "d", "api_base": "http://a", "api_version": "v"},
        ),
        # SelfHostedLLMClientConfig
        (
            "{type: self-hosted, model_name: m, openai_api_base: 'http://v'}",
            {"provider": "self-hosted", "model": "m", "api_base": "http://v"},
        ),
        # DefaultLiteLLMClientConfig: request_timeout only
        (
            "{provider: anthropic, model: claude, request_timeout: 5, api_key: ${K}}",
            {"provider": "anthropic", "model": "claude", "timeout": 5.0},
        ),
    ],
)  # fmt: skip
def test_aliases_resolve_as_rasa_3_11_20_resolves_them(
    written: str, read_as: dict[str, Any]
) -> None:
    model = model_of(one_model(written))
    model.pop("api_key", None)
    assert model == read_as


def test_aliases_are_deprecation_warnings() -> None:
    _, _, warnings = read(one_model("{provider: openai, model_name: m, api_key: ${K}}"))
    assert warnings == [
        "endpoints.yml: model_groups[0] (id g).models[0].model_name: is deprecated (removed in "
        "Rasa 4.0.0): write model instead"
    ]


@pytest.mark.parametrize(
    ("release", "provider", "expected"),
    [
        (R3_11_13, "openai", "max_tokens"),  # no alias before 3.11.14
        (R3_11_20, "openai", "max_completion_tokens"),
        (R3_11_20, "azure", "max_completion_tokens"),
        (Release(3, 12, 13), "openai", "max_tokens"),  # 3.12.0-3.12.13 lack it again
        (Release(3, 12, 14), "openai", "max_completion_tokens"),
        (R3_11_20, "self-hosted", "max_tokens"),  # not an alias of SelfHostedLLMClientConfig
        (R3_11_20, "anthropic", "max_tokens"),
    ],
)
def test_max_tokens_is_renamed_where_that_release_renames_it(
    release: Release, provider: str, expected: str
) -> None:
    keys = {
        "openai": "model: m, api_key: ${K}",
        "azure": "deployment: d, api_base: 'http://a', api_version: v, api_key: ${K}",
        "self-hosted": "model: m, api_base: 'http://v'",
        "anthropic": "model: m, api_key: ${K}",
    }[provider]
    model = model_of(one_model(f"{{provider: {provider}, {keys}, max_tokens: 5}}"), release=release)
    assert model[expected] == 5
    assert ("max_tokens" in model) == (expected == "max_tokens")


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("{provider: openai, model: m, api_key: ${K}, stream: true}",
         "models[0].stream: is not allowed (Rasa's OpenAIClientConfig refuses it)"),
        ("{provider: azure, deployment: d, api_key: ${K}, n: 2}",
         "models[0].n: is not allowed (Rasa's AzureOpenAIClientConfig refuses it)"),
        ("{provider: anthropic, model: c, stream: false}",
         "models[0].stream: is not allowed (Rasa's DefaultLiteLLMClientConfig refuses it)"),
        ("{provider: openai, model: m, api_key: ${K}, api_type: azure}",
         "models[0].api_type: must be openai for provider openai (it is checked and dropped)"),
        ("{provider: self-hosted, model: m, api_base: 'http://v', openai_api_type: azure}",
         "models[0].openai_api_type: must be openai for provider self-hosted (it is checked and "
         "dropped)"),
        ("{provider: anthropic, model_name: claude}",
         "models[0].model_name: is not read for this provider: write model instead"),
        ("{type: anthropic, model: claude}",
         "models[0].type: anthropic given as type: Rasa reads type/_type only as openai, azure "
         "or self-hosted; write provider: anthropic"),
        ("{provider: self-hosted, model: m}",
         "models[0].api_base: required key is missing (Rasa's SelfHostedLLMClientConfig needs "
         "it)"),
        ("{provider: openai, model: m, api_key: ${K}, api_key_env: OPENAI_KEY}",
         "models[0].api_key_env: is not a Rasa key (Rasa 3.21 refuses it by name; before, it is "
         "sent in the request body): write api_key: ${ENV_VAR_NAME}"),
    ],
)  # fmt: skip
def test_what_rasa_refuses_is_refused_naming_group_and_key(written: str, problem: str) -> None:
    _, problems, _ = read(one_model(written))
    assert problems == [f"model_groups[0] (id g).{problem}"]


def test_api_type_is_dropped_and_rasa_stream_passes() -> None:
    # ModelConfig.from_dict pops api_type (_configs/model_group_config.py); RasaLLMClientConfig
    # forbids nothing, so `stream` reaches the request of provider rasa as written.
    model = model_of(one_model("{provider: azure, deployment: d, api_type: azure, api_key: ${K}}"))
    assert "api_type" not in model
    groups, problems, _ = read(
        one_model("{provider: rasa, model: m, api_base: 'http://r', stream: false}"),
        {"RASA_PRO_LICENSE": "lic"},
    )
    assert problems == [] and groups["g"].models[0].extra_body() == {"stream": False}


# ---- provider inference (shared/utils/llm.py get_provider_from_config, 3.11.20) --------------


@pytest.mark.parametrize(
    ("written", "provider"),
    [
        ("{model: m, api_key: ${K}}", "openai"),  # the LLMBasedRouter's default provider
        ("{deployment: d, api_base: 'http://a', api_version: v, api_key: ${K}}", "azure"),
        ("{deployment_name: d, api_base: 'http://a', api_version: v, api_key: ${K}}", "azure"),
        ("{type: azure, deployment: d, api_base: 'http://a', api_version: v, api_key: ${K}}",
         "azure"),
        ("{provider: openai, deployment: d, model: m, api_key: ${K}}", "openai"),
        ("{type: self-hosted, model: m, api_base: 'http://v'}", "self-hosted"),
        ("{provider: mistral, model: mistral-small, api_key: ${K}}", "mistral"),
    ],
)  # fmt: skip
def test_provider_is_inferred_as_rasa_infers_it(written: str, provider: str) -> None:
    assert model_of(one_model(written))["provider"] == provider


# ---- ${VAR} (shared/utils/yaml.py, engine/validation.py 3.11.20; model_group_validation.py
# 3.21.0) ----------------------------------------------------------------------------------------


def test_every_plain_scalar_is_expanded_at_load() -> None:
    text = "model_groups:\n  - id: g\n    models:\n      - provider: openai\n"
    text += "        model: ${M}\n        api_base: ${B}\n        rpm: ${RPM}\n"
    text += "        api_key: ${K}\n        user: team-${K}\n"
    groups, problems, _ = read(text)
    assert problems == []
    deployment = groups["g"].models[0]
    assert (deployment.model, deployment.api_base, deployment.rpm) == (
        "gpt-4o-mini",
        "http://llm.internal/v1",
        600,
    )
    assert deployment.api_key is not None and deployment.api_key.get_secret_value() == "key-value"
    assert deployment.extra_body() == {"user": "team-key-value"}


def test_a_quoted_reference_is_refused_except_where_rasa_expands_it_later() -> None:
    quoted = "{provider: openai, model: '${M}', api_base: '${B}', api_key: ${K}}"
    _, problems, _ = read(one_model(quoted))
    assert len(problems) == 1 and problems[0].startswith(
        "model_groups[0] (id g).models[0].model: a quoted ${...} is not expanded for this key"
    )
    # api_base may be quoted: resolved when the client is built
    model = model_of(one_model("{provider: openai, model: m, api_base: '${B}', api_key: ${K}}"))
    assert model["api_base"] == "http://llm.internal/v1"


@pytest.mark.parametrize(
    ("api_key", "release", "problem"),
    [
        ("${K}", R3_11_20, None),
        ("${K}x", R3_11_20, None),  # re.match: a `${VAR}` prefix is enough up to 3.20.5
        ("${K}x", Release(3, 20, 5), None),
        ("${K}x", R3_21_0, "must be exactly ${VAR}: Rasa 3.21 refuses text around the reference"),
        ("x${K}", R3_11_20, "must be written as ${VAR}, a literal secret is refused"),
        ("sk-live-abc", R3_11_20, "must be written as ${VAR}, a literal secret is refused"),
        ("1234", R3_11_20, "must be written as ${VAR} (an environment variable)"),
    ],
)
def test_secret_shapes_per_release(api_key: str, release: Release, problem: str | None) -> None:
    _, problems, _ = read(one_model(f"{{provider: openai, model: m, api_key: {api_key}}}"),
                          release=release)  # fmt: skip
    expected = [] if problem is None else [f"model_groups[0] (id g).models[0].api_key: {problem}"]
    assert problems == expected
    assert not any("sk-live-abc" in p for p in problems)


def test_k_x_is_the_value_of_k_then_x() -> None:
    groups, _, _ = read(one_model("{provider: openai, model: m, api_key: ${K}x}"))
    api_key = groups["g"].models[0].api_key
    assert api_key is not None and api_key.get_secret_value() == "key-valuex"


def test_unset_variables_are_named() -> None:
    # at load: a word starting with an unset ${VAR} (also under a secret key, 3.11.10+); later:
    # one left inside a longer word, which Rasa would send as written
    text = (
        "model_groups:\n  - id: g\n    models:\n      - provider: openai\n        model: m\n"
        "        api_key: ${NOPE_KEY}\n        api_base: https://${NOPE_HOST}/v1\n"
    )
    _, problems, _ = read(text)
    assert problems == [
        "model_groups[0] (id g).models[0].api_key: environment variable NOPE_KEY is not set",
        "model_groups[0] (id g).models[0].api_base: environment variable NOPE_HOST is not set",
    ]


def test_oauth_client_id_must_be_a_reference_only_in_3_21() -> None:
    oauth = (
        "{provider: azure, deployment: d, api_base: 'http://a', api_version: v, oauth: {type: "
        "azure_entra_id_client_secret, client_id: literal-id, client_secret: ${K}, "
        "tenant_id: t, scopes: s}}"
    )
    assert read(one_model(oauth), release=R3_12_42)[1] == []
    assert read(one_model(oauth), release=R3_21_0)[1] == [
        "model_groups[0] (id g).models[0].oauth.client_id: must be written as ${VAR}, a literal "
        "secret is refused"
    ]


# ---- router: (litellm_router_client_config.py 3.11.20; litellm 1.69.3 router.py) ---------------

A_AND_B = "{provider: openai, model: a, api_key: ${K}}, "
TWO = A_AND_B + "{provider: openai, model: b, api_key: ${K}}"


@pytest.mark.parametrize(
    ("router", "problem"),
    [
        ("foo: 1", "router.foo: unknown router key: Rasa passes the router block to litellm's "
                   "Router (litellm 1.69.3), which has no such setting"),
        ("lowest_latency_buffer: 0.1", "router.lowest_latency_buffer: unknown router key: Rasa "
         "passes the router block to litellm's Router (litellm 1.69.3), which has no such "
         "setting"),
        ("cache_responses: true", "router.cache_responses: is a setting of litellm's Router "
         "(litellm 1.69.3) that the worker does not implement: remove it"),
        ("routing_strategy: usage-based-routing-v2", "router.routing_strategy: "
         "usage-based-routing-v2 is not one Rasa accepts: simple-shuffle, least-busy, "
         "latency-based-routing, usage-based-routing, cost-based-routing"),
        ("fallbacks: [other]", "router.fallbacks[0]: is not a dictionary (litellm refuses it)"),
        ("fallbacks: [{g: [x], h: [y]}]", "router.fallbacks[0]: must have exactly one key, but "
         "has 2 (litellm)"),
        ("fallbacks: [{g: [missing]}]", "router.fallbacks: falls back to model group missing, "
         "which is not defined in endpoints.yml"),
        ("retry_policy: {TimeoutErrorRetries: -1}", "router.retry_policy.TimeoutErrorRetries: "
         "must be a whole number of at least 0"),
    ],
)  # fmt: skip
def test_router_keys_litellm_refuses_or_the_worker_does_not_implement(
    router: str, problem: str
) -> None:
    _, problems, _ = read(one_model(TWO, router))
    assert problems == [f"model_groups[0] (id g).{problem}"]


def test_a_key_of_a_newer_litellm_names_that_version() -> None:
    _, problems, _ = read(one_model(TWO, "enable_weighted_failover: true"), release=R3_21_0)
    assert problems == [
        "model_groups[0] (id g).router.enable_weighted_failover: is a setting of litellm's "
        "Router (litellm 1.101.0) that the worker does not implement: remove it"
    ]
    _, problems, _ = read(one_model(TWO, "enable_weighted_failover: true"))
    assert "(litellm 1.69.3), which has no such setting" in problems[0]


def test_empty_or_null_router_is_refused() -> None:
    for router in ("router: {}\n", "router:\n"):
        text = one_model("{provider: openai, model: a, api_key: ${K}}") + "    " + router
        _, problems, _ = read(text)
        assert len(problems) == 1 and problems[0].startswith("model_groups[0] (id g).router:")


def test_use_chat_completions_endpoint_is_read_from_the_router_of_a_routed_group() -> None:
    groups, problems, _ = read(one_model(TWO, "use_chat_completions_endpoint: false"))
    assert problems == []
    assert [d.use_chat_completions_endpoint for d in groups["g"].models] == [False, False]
    _, problems, _ = read(
        one_model(
            "{provider: self-hosted, model: m, api_base: 'http://v', "
            "use_chat_completions_endpoint: false}",
            "num_retries: 1",
        )  # fmt: skip
    )
    assert problems == [
        "model_groups[0] (id g).models[0].use_chat_completions_endpoint: is a router setting: "
        "Rasa refuses it in a model of a group with a router; write it under the group's router:"
    ]
    # a standalone self-hosted model reads its own (SelfHostedLLMClientConfig)
    model = model_of(
        one_model(
            "{provider: self-hosted, model: m, api_base: 'http://v', "
            "use_chat_completions_endpoint: false}"
        )  # fmt: skip
    )
    assert model["use_chat_completions_endpoint"] is False


def test_fallbacks_generic_and_default() -> None:
    others = (
        "  - id: backup\n    models:\n      - provider: openai\n        model: c\n"
        "        api_key: ${K}\n"
        "  - id: last\n    models:\n      - provider: openai\n        model: d\n"
        "        api_key: ${K}\n"
    )
    for router, expected in (
        ("fallbacks: [{g: [backup, last]}]", ("backup", "last")),
        ("fallbacks: [{'*': [last]}]", ("last",)),
        ("default_fallbacks: [backup]", ("backup",)),
        ("fallbacks: [{g: [last]}, {'*': [backup]}]", ("last",)),
    ):
        groups, problems, _ = read(one_model(TWO, router, others))
        assert problems == [] and groups["g"].settings.fallbacks == expected, router


@pytest.mark.parametrize(
    ("release", "internal", "warned"),
    [(R3_11_20, None, True), (R3_21_0, 4, False)],
)
def test_retry_policy_as_the_releases_litellm_applies_it(
    release: Release, internal: int | None, warned: bool
) -> None:
    # litellm 1.69.3 router_utils/get_retry_from_policy.py never consults
    # InternalServerErrorRetries; 1.101.0 does (by the exception's MRO)
    router = "retry_policy: {BadRequestErrorRetries: 0, InternalServerErrorRetries: 4}"
    groups, problems, warnings = read(one_model(TWO, router), release=release)
    assert problems == []
    settings = groups["g"].settings
    assert settings.retry_policy.get(ErrorKind.BAD_REQUEST) == 0
    assert settings.retry_policy.get(ErrorKind.INTERNAL_SERVER) == internal
    assert any("InternalServerErrorRetries: is accepted but never applied" in w
               for w in warnings) is warned  # fmt: skip


def test_allowed_fails_policy_zero_per_release() -> None:
    # `policy or allowed_fails` up to litellm 1.90.2 (router.py); 1.101.0 honours 0
    router = "allowed_fails_policy: {RateLimitErrorAllowedFails: 0, TimeoutErrorAllowedFails: 2}"
    groups, _, warnings = read(one_model(TWO, router))
    assert groups["g"].settings.allowed_fails_policy == {ErrorKind.TIMEOUT: 2}
    assert any("0 reads as unset" in w for w in warnings)
    groups, _, _ = read(one_model(TWO, router), release=R3_21_0)
    assert groups["g"].settings.allowed_fails_policy == {
        ErrorKind.RATE_LIMIT: 0,
        ErrorKind.TIMEOUT: 2,
    }


def test_routing_strategy_args_litellm_ignores_are_said() -> None:
    _, problems, warnings = read(
        one_model(TWO, "routing_strategy: simple-shuffle\nrouting_strategy_args: {ttl: 5}")
    )
    assert problems == []
    assert warnings == [
        "endpoints.yml: model_groups[0] (id g).router.routing_strategy_args.ttl: is not read by "
        "simple-shuffle (litellm ignores it)"
    ]


def test_group_keys_are_call_arguments_and_a_call_deadline_where_rasa_has_one() -> None:
    text = one_model(TWO, "num_retries: 1") + "    temperature: 0.3\n    timeout: 30\n"
    groups, problems, _ = read(text)
    group = groups["g"]
    assert problems == [] and group.call_params == {"temperature": 0.3, "timeout": 30}
    assert group.call_timeout is None  # 3.11.20 has no outer wait
    # litellm_router_llm_client.py 3.12.37+: asyncio.wait_for(group timeout, else 300 s)
    assert read(text, release=R3_12_42)[0]["g"].call_timeout == 30
    no_timeout = one_model(TWO, "num_retries: 1")
    assert read(no_timeout, release=R3_12_42)[0]["g"].call_timeout == 300


def test_simple_shuffle_says_which_values_weigh_mixed_deployments() -> None:
    text = one_model(
        "{provider: openai, model: a, api_key: ${K}, rpm: 600}\n"
        "      - {provider: openai, model: b, api_key: ${K}, weight: 2}",
        "routing_strategy: simple-shuffle",
    )
    _, problems, warnings = read(text)
    assert problems == []
    assert warnings == [
        "endpoints.yml: model_groups[0] (id g).models: simple-shuffle weighs these deployments "
        "by weight (the first of weight, rpm, tpm that any deployment sets): a 1 (no weight), "
        "b 2; their rpm is not used to choose"
    ]


def test_the_bundled_example_says_nothing_about_its_weights() -> None:
    example = Path(__file__).parents[2] / "worker" / "examples" / "endpoints.yml"
    result = read_endpoints(example, {"FAKE_LLM_BASE": "http://f/v1", "FAKE_LLM_KEY": "k"})
    assert result.problems == [] and result.warnings == []


# ---- provider rasa (utils/licensing.py, llm/rasa_llm_client.py) --------------------------------

RASA = "{provider: rasa, model: m, api_base: 'http://r'}"


@pytest.mark.parametrize(
    ("release", "environ", "model", "key"),
    [
        (R3_11_20, {"RASA_PRO_LICENSE": "pro"}, RASA, "pro"),
        (R3_11_20, {"RASA_LICENSE": "new", "RASA_PRO_LICENSE": "pro"}, RASA, "pro"),
        (R3_13_13, {"RASA_LICENSE": "new", "RASA_PRO_LICENSE": "pro"}, RASA, "new"),
        (R3_13_13, {"RASA_PRO_LICENSE": "pro"}, RASA, "pro"),
        # 3.14.28+: an explicit api_key wins; before, the license replaces it
        (R3_11_20, {"RASA_PRO_LICENSE": "pro", "K": "own"}, RASA[:-1] + ", api_key: ${K}}", "pro"),
        (R3_14_28, {"RASA_LICENSE": "new", "K": "own"}, RASA[:-1] + ", api_key: ${K}}", "own"),
    ],
)
def test_provider_rasa_sends_the_license_of_that_release(
    release: Release, environ: dict[str, str], model: str, key: str
) -> None:
    groups, problems, _ = read(one_model(model), environ, release)
    assert problems == []
    api_key = groups["g"].models[0].api_key
    assert api_key is not None and api_key.get_secret_value() == key


def test_provider_rasa_without_a_license_names_the_variables() -> None:
    assert read(one_model(RASA), {}, R3_21_0)[1] == [
        "model_groups[0] (id g).models[0]: provider rasa sends the Rasa license as its key: set "
        "RASA_LICENSE or RASA_PRO_LICENSE"
    ]


# ---- the rules table ----------------------------------------------------------------------------


def test_rows_cover_every_release_from_3_11_0_to_3_21_0_without_overlap() -> None:
    for first, second in zip(RULES, RULES[1:], strict=False):
        assert first.last < second.first
    lines = {(3, 11): 20, (3, 12): 42, (3, 13): 25, (3, 14): 29, (3, 15): 36, (3, 16): 32,
             (3, 17): 12, (3, 18): 9, (3, 19): 9, (3, 20): 5, (3, 21): 0}  # fmt: skip
    for (major, minor), newest in lines.items():
        for patch in range(newest + 1):
            assert rules_for(Release(major, minor, patch)).covers(Release(major, minor, patch))
    with pytest.raises(UnknownRelease):
        rules_for(Release(3, 10, 0))


def test_the_rules_take_any_release_number() -> None:
    class Number:  # anything with these attributes, as worker.rasa.releases.Release has them
        major, minor, patch = 3, 13, 13

    assert rules_for(Number()).license_variables == ("RASA_LICENSE", "RASA_PRO_LICENSE")
    assert rules_for(rasa_version("3.13.13").release) is rules_for(Number())
    assert rules_for().first == Release(3, 11, 14)


def test_the_readme_shows_the_table() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert markdown_table() in readme


def test_the_cases_are_written_as_block_yaml() -> None:
    assert as_block("{provider: openai, api_key: ${K}x, model: '${M}', oauth: {scopes: [s]}}") == [
        "      - provider: openai",
        "        api_key: ${K}x",
        "        model: '${M}'",
        "        oauth:",
        "          scopes: [s]",
    ]
