"""A Bedrock deployment's `aws_*` keys and its API key, as endpoints.yml is read (no I/O: the
credentials themselves are resolved on the first call, tests/integration/
test_llm_bedrock_credentials.py).

litellm's keys are those of llms/bedrock/base_aws_llm.py BaseAWSLLM.get_credentials (1.69.3;
`aws_external_id` from 1.79.3), a web identity token is named as its get_secret reads one
(secret_managers/main.py), and the Bedrock API key (get_request_headers: the deployment's
`api_key`, else AWS_BEARER_TOKEN_BEDROCK, as `Authorization: Bearer`) exists from litellm 1.79.3:
Rasa 3.13.24, 3.14.15 and 3.15.0 on (the pins of each release's wheel)."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.config.app_config import load_app_config
from worker.config.endpoints import read_endpoints
from worker.config.errors import ConfigError
from worker.llm.model_group import ModelGroup
from worker.llm.providers import BuildContext, HttpProvider, build_provider
from worker.llm.redaction import Redactor
from worker.rasa.releases import Release

R3_11_20, R3_14_8, R3_14_15, R3_15_0 = (
    Release(3, 11, 20),
    Release(3, 14, 8),
    Release(3, 14, 15),
    Release(3, 15, 0),
)
ENV = {"KEY_ID": "AKIDFILE", "SECRET": "file-secret-value", "BEDROCK_KEY": "bedrock-api-key-1"}


def read(
    keys: str, environ: dict[str, str] | None = None, release: Release = R3_15_0
) -> tuple[ModelGroup | None, list[str], list[str]]:
    path = Path("endpoints.yml")
    path.write_text(
        "model_groups:\n  - id: g\n    models:\n      - provider: bedrock\n"
        "        model: anthropic.claude-3-haiku-20240307-v1:0\n"
        "        aws_region_name: eu-central-1\n"
        + "".join(f"        {line}\n" for line in keys.strip().splitlines())
    )
    result = read_endpoints(path, ENV if environ is None else environ, release=release)
    group = result.endpoints.model_groups.get("g") if result.endpoints is not None else None
    return group, [p.split(": ", 1)[1] for p in result.problems], result.warnings


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def provider_of(group: ModelGroup, environ: dict[str, str] | None = None) -> HttpProvider:
    built = build_provider(group.models[0], None, BuildContext(environ or ENV))
    assert isinstance(built, HttpProvider)
    return built


def refusal(keys: str, environ: dict[str, str] | None = None) -> str:
    """Why the deployment is refused when it is built (at start, reload and by `validate`,
    for the groups the router calls: worker.config.model_groups.check_build)."""
    group, problems, _ = read(keys, environ)
    assert group is not None and problems == [], problems
    with pytest.raises(ValueError) as refused:
        provider_of(group, environ)
    return str(refused.value)


@pytest.mark.parametrize(
    "key", ["aws_region", "aws_profile", "aws_role_arn", "aws_secret_key", "aws_assume_role"]
)
def test_an_aws_key_litellm_does_not_have_is_refused_by_name(key: str) -> None:
    problem = refusal(f"{key}: x\n")
    assert f"{key} is not a Bedrock key of litellm" in problem
    assert "additionalModelRequestFields" in problem


def test_the_start_refuses_it_naming_file_group_and_key(workdir: Path) -> None:
    read("aws_region: eu-west-1\n")
    config = workdir / "config.yml"
    config.write_text(
        "pipeline:\n  - name: LLMBasedRouter\n    calm_entry: {sticky: handles transfers}\n"
        "    llm: {model_group: g}\n"
    )
    with pytest.raises(ConfigError) as refused:
        load_app_config(config, workdir / "endpoints.yml", None, ENV)
    [problem] = refused.value.problems
    assert problem.startswith("endpoints.yml: model_groups[0] (id g).models[0]: ")
    assert "aws_region is not a Bedrock key of litellm" in problem


def test_litellms_aws_keys_never_reach_the_request_body() -> None:
    group, problems, warnings = read(
        "aws_profile_name: bedrock\naws_bedrock_runtime_endpoint: https://vpce.example/\ntop_k: 5\n"
    )
    assert group is not None and problems == [] and warnings == []
    provider = provider_of(group)
    body = provider.body("hi")
    assert body["additionalModelRequestFields"] == {"top_k": 5}
    assert not any(k.startswith("aws_") for k in str(body).split("'"))
    # aws_bedrock_runtime_endpoint is the base URL (litellm's get_runtime_endpoint).
    assert provider.url.startswith("https://vpce.example/model/")
    assert "profile 'bedrock'" in repr(provider.signer)


@pytest.mark.parametrize(
    ("keys", "says"),
    [
        ("aws_role_name: arn:aws:iam::1:role/r", "aws_role_name needs aws_session_name"),
        ("aws_session_name: worker", "aws_session_name has no effect without aws_role_name"),
        ("aws_external_id: x", "aws_external_id has no effect without aws_role_name"),
        ("aws_sts_endpoint: http://sts.local", "AWS_ENDPOINT_URL_STS"),
        ("aws_web_identity_token: TOKEN_VAR", "no effect without aws_role_name"),
        (
            "aws_role_name: arn:aws:iam::1:role/r\naws_session_name: w\n"
            "aws_web_identity_token: TOKEN_VAR\naws_external_id: x",
            "AssumeRoleWithWebIdentity refuses",
        ),
        (
            "aws_role_name: arn:aws:iam::1:role/r\naws_session_name: w\n"
            "aws_web_identity_token: NOT_SET_TOKEN_VAR",
            "environment variable NOT_SET_TOKEN_VAR is not set",
        ),
        (
            "aws_role_name: arn:aws:iam::1:role/r\naws_session_name: w\n"
            "aws_web_identity_token: oidc/google/https://example",
            "oidc/google/ is not a token source",
        ),
        (
            "aws_role_name: arn:aws:iam::1:role/r\naws_session_name: w\n"
            "aws_web_identity_token: eyJhbGciOi.eyJzdWIi.c2ln",
            "not the token itself",
        ),
        ("aws_access_key_id: ${KEY_ID}", "aws_secret_access_key together"),
        ("aws_profile_name: 7", "aws_profile_name must be text"),
    ],
)
def test_keys_that_mean_nothing_alone_are_refused_with_the_reason(keys: str, says: str) -> None:
    assert says in refusal(keys, {**ENV, "TOKEN_VAR": "web-identity-token"})


def test_what_each_key_combination_signs_with() -> None:
    cases = {
        "": "botocore's default chain",
        "aws_access_key_id: ${KEY_ID}\naws_secret_access_key: ${SECRET}": "the deployment's keys",
        "aws_profile_name: p": "profile 'p'",
        "aws_role_name: arn:aws:iam::1:role/r\naws_session_name: w": "AssumeRole",
        "aws_role_name: arn:aws:iam::1:role/r\naws_session_name: w\n"
        "aws_web_identity_token: oidc/file//var/run/secrets/token": "AssumeRoleWithWebIdentity",
    }
    for keys, source in cases.items():
        group, problems, _ = read(keys)
        assert group is not None, (keys, problems)
        assert f"from {source}" in repr(provider_of(group).signer), keys


def test_a_bedrock_api_key_where_the_releases_litellm_reads_one() -> None:
    environ = {**ENV, "AWS_BEARER_TOKEN_BEDROCK": "bedrock-api-key-from-env"}
    for release in (R3_14_15, R3_15_0):
        group, problems, warnings = read("", environ, release)
        assert group is not None and problems == [] and warnings == []
        provider = provider_of(group, environ)
        assert provider.headers["Authorization"] == "Bearer bedrock-api-key-from-env"
        assert provider.signer is None  # no SigV4
        # The deployment's own api_key wins over the variable (litellm: `api_key` first).
        group, _, _ = read("api_key: ${BEDROCK_KEY}", environ, release)
        assert group is not None
        assert provider_of(group).headers["Authorization"] == "Bearer bedrock-api-key-1"


def test_before_litellm_read_api_keys_they_are_not_used_and_a_warning_says_so() -> None:
    environ = {**ENV, "AWS_BEARER_TOKEN_BEDROCK": "bedrock-api-key-from-env"}
    for release in (R3_11_20, R3_14_8):
        group, problems, warnings = read("", environ, release)
        assert group is not None and problems == []
        [warning] = warnings
        assert "AWS_BEARER_TOKEN_BEDROCK is not used" in warning and "SigV4" in warning
        assert provider_of(group, environ).signer is not None
        group, problems, warnings = read("api_key: ${BEDROCK_KEY}", ENV, release)
        assert group is not None and problems == []
        assert group.models[0].api_key is None
        assert ["api_key" in w and "is not used" in w for w in warnings] == [True]


def test_the_secrets_a_bedrock_deployment_holds_are_known_to_the_redactor() -> None:
    group, _, _ = read("aws_access_key_id: ${KEY_ID}\naws_secret_access_key: ${SECRET}\n")
    assert group is not None
    redactor = Redactor()
    provider = build_provider(group.models[0], None, BuildContext(ENV, redactor=redactor))
    redactor.learn(provider.secrets)
    assert redactor("echo file-secret-value AKIDFILE") == "echo *** ***"
    assert "file-secret-value" not in repr(provider) + repr(getattr(provider, "signer", None))
