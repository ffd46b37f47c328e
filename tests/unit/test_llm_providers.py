"""Request shapes, answer parsing and the environment each provider reads, without I/O.

The environment variables are those Rasa's clients read (rasa/shared/providers/llm/*.py of
3.11.20, and litellm 1.69.3's litellm/main.py and llms/azure/ for routed groups)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from worker.llm.model_group import Deployment
from worker.llm.providers import (
    BuildContext,
    HttpProvider,
    build_provider,
    error_text,
    is_native,
    model_name,
)

KEY = "sk-test-0123456789abcdef"
AWS_KEY_ID = "AKIDEXAMPLE"
# Parameters in OpenAI's names, to show how each wire format carries them (which ones the router
# sends to which provider is worker.llm.router_defaults' business).
PARAMS = {"temperature": 0.0, "max_tokens": 1}


def endpoint(
    environ: dict[str, str] | None = None, *, routed: bool = True, **keys: Any
) -> HttpProvider:
    deployment = Deployment.model_validate(keys)
    provider = build_provider(
        deployment, PARAMS | deployment.extra_body(), BuildContext(environ or {}, routed=routed)
    )
    assert isinstance(provider, HttpProvider)
    return provider


def bedrock_with_keys(model: str = "m", region: str = "us-east-1", **keys: Any) -> HttpProvider:
    """A Bedrock deployment with static keys: its requests are signed at once, with no I/O."""
    return endpoint(
        provider="bedrock",
        model=model,
        aws_access_key_id=AWS_KEY_ID,
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        aws_region_name=region,
        **keys,
    )


def sent(ep: HttpProvider, prompt: str = "route me") -> tuple[str, dict[str, str], dict[str, Any]]:
    request = ep.request(prompt)
    if ep.signer is not None:  # signed with credentials at hand: no I/O
        request = asyncio.run(ep.signer.sign(request, 1.0))
    return request.url, dict(request.headers), json.loads(request.body)


def test_openai_chat_request() -> None:
    url, headers, body = sent(endpoint(provider="openai", model="gpt-4o-mini", api_key=KEY))
    assert url == "https://api.openai.com/v1/chat/completions"
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert body == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "route me"}],
        "temperature": 0.0,
        "max_tokens": 1,
    }


def test_without_parameters_a_request_carries_the_deployments_own_keys() -> None:
    deployment = Deployment.model_validate({"provider": "openai", "model": "m", "seed": 7})
    provider = build_provider(deployment, None, BuildContext({"OPENAI_API_KEY": KEY}))
    assert isinstance(provider, HttpProvider)
    assert json.loads(provider.request("hi").body) == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "seed": 7,
    }


def test_openai_key_from_environment_and_prefix_removed() -> None:
    ep = endpoint({"OPENAI_API_KEY": KEY}, provider="openai", model="openai/gpt-4")
    url, headers, body = sent(ep)
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert body["model"] == "gpt-4"


def test_azure_request_puts_deployment_in_path_and_key_in_api_key_header() -> None:
    ep = endpoint(
        provider="azure",
        deployment="gpt-4o-mini-fr",
        api_base="https://fr.example.com/",
        api_version="2024-06-01",
        api_key=KEY,
    )
    url, headers, body = sent(ep)
    assert url == (
        "https://fr.example.com/openai/deployments/gpt-4o-mini-fr/chat/completions"
        "?api-version=2024-06-01"
    )
    assert headers["api-key"] == KEY
    assert "Authorization" not in headers
    assert "model" not in body


def test_azure_base_key_and_version_from_environment() -> None:
    env = {
        "AZURE_API_BASE": "https://env.example.com",
        "AZURE_API_VERSION": "2024-10-21",
        "AZURE_API_KEY": KEY,
    }
    url, headers, _ = sent(endpoint(env, provider="azure", deployment="router"))
    assert url == (
        "https://env.example.com/openai/deployments/router/chat/completions?api-version=2024-10-21"
    )
    assert headers["api-key"] == KEY


def test_azure_without_base_version_or_key_is_a_configuration_error() -> None:
    # rasa/shared/providers/_utils.py validate_azure_client_setup (3.11.20): no default version.
    full = {"AZURE_API_BASE": "https://a", "AZURE_API_VERSION": "v", "AZURE_API_KEY": KEY}
    for missing, match in (
        ("AZURE_API_BASE", "api_base"),
        ("AZURE_API_VERSION", "api_version"),
        ("AZURE_API_KEY", "AZURE_API_KEY"),
    ):
        env = {k: v for k, v in full.items() if k != missing}
        with pytest.raises(ValueError, match=match):
            endpoint(env, provider="azure", deployment="router")


def test_azure_key_and_token_variables_routed_and_standalone() -> None:
    base = {"AZURE_API_BASE": "https://a", "AZURE_API_VERSION": "v"}
    # routed (litellm azure): AZURE_OPENAI_API_KEY first, then AZURE_API_KEY, else a token
    env = {**base, "AZURE_OPENAI_API_KEY": "k-openai", "AZURE_API_KEY": "k-azure"}
    assert sent(endpoint(env, provider="azure", deployment="d"))[1]["api-key"] == "k-openai"
    headers = sent(endpoint({**base, "AZURE_AD_TOKEN": "t0k"}, provider="azure", deployment="d"))[1]
    assert headers["Authorization"] == "Bearer t0k" and "api-key" not in headers
    # standalone (AzureOpenAILLMClient): AZURE_API_KEY, then OPENAI_API_KEY (deprecated), and
    # OPENAI_API_BASE/OPENAI_API_VERSION after the AZURE_ ones
    env = {"OPENAI_API_BASE": "https://o", "OPENAI_API_VERSION": "v2", "OPENAI_API_KEY": "k-o"}
    url, headers, _ = sent(endpoint(env, routed=False, provider="azure", deployment="d"))
    assert url == "https://o/openai/deployments/d/chat/completions?api-version=v2"
    assert headers["api-key"] == "k-o"
    with pytest.raises(ValueError, match="api_base"):
        endpoint(env, provider="azure", deployment="d")  # routed: no OPENAI_* fallback


def test_openai_base_url_from_the_environment_in_each_clients_order() -> None:
    both = {"OPENAI_API_KEY": KEY, "OPENAI_API_BASE": "http://api-base/v1"}
    both["OPENAI_BASE_URL"] = "http://base-url/v1"
    # routed: litellm reads OPENAI_BASE_URL before OPENAI_API_BASE (litellm/main.py)
    assert sent(endpoint(both, provider="openai", model="m"))[0] == (
        "http://base-url/v1/chat/completions"
    )
    # standalone: Rasa's OpenAILLMClient reads OPENAI_API_BASE first
    assert sent(endpoint(both, routed=False, provider="openai", model="m"))[0] == (
        "http://api-base/v1/chat/completions"
    )
    only = {"OPENAI_API_KEY": KEY, "OPENAI_API_BASE": "http://api-base/v1"}
    assert sent(endpoint(only, provider="openai", model="m"))[0].startswith("http://api-base/")
    given = endpoint(both, provider="openai", model="m", api_base="http://own/v1")
    assert sent(given)[0] == "http://own/v1/chat/completions"


def test_openai_without_any_key_is_refused() -> None:
    # litellm.validate_environment: "Environment variables: OPENAI_API_KEY not set."
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        endpoint({}, provider="openai", model="m")


def test_litellm_proxy_and_self_hosted_variables() -> None:
    env = {"LITELLM_PROXY_API_BASE": "http://proxy:4000", "LITELLM_PROXY_API_KEY": "pk"}
    url, headers, _ = sent(endpoint(env, provider="litellm_proxy", model="m"))
    assert (url, headers["Authorization"]) == ("http://proxy:4000/chat/completions", "Bearer pk")
    env = {"HOSTED_VLLM_API_KEY": "vk"}
    headers = sent(endpoint(env, provider="self-hosted", model="m", api_base="http://v"))[1]
    assert headers["Authorization"] == "Bearer vk"


def test_self_hosted_chat_and_text_completions() -> None:
    chat = endpoint(provider="self-hosted", model="meta-llama/Llama-3-8B", api_base="http://h/v1")
    url, headers, body = sent(chat)
    assert url == "http://h/v1/chat/completions"
    assert "Authorization" not in headers
    assert body["model"] == "meta-llama/Llama-3-8B"  # a slash that is not a provider prefix
    text = endpoint(
        provider="self-hosted",
        model="hosted_vllm/mistral",
        api_base="http://h/v1",
        use_chat_completions_endpoint=False,
    )
    url, _, body = sent(text)
    assert text.format_name == "openai-text"
    assert url == "http://h/v1/completions"
    assert body == {"model": "mistral", "prompt": "route me", "temperature": 0.0, "max_tokens": 1}


def test_openai_compatible_servers_need_api_base() -> None:
    for provider in ("self-hosted", "litellm_proxy", "rasa"):
        with pytest.raises(ValueError, match="api_base"):
            endpoint(provider=provider, model="m", api_key=KEY)


def test_rasa_sends_its_key_and_strips_the_openai_prefix() -> None:
    url, headers, body = sent(
        endpoint(provider="rasa", model="openai/rasa-cmd-gen", api_base="http://r", api_key=KEY)
    )
    assert (url, headers["Authorization"], body["model"]) == (
        "http://r/chat/completions",
        f"Bearer {KEY}",
        "rasa-cmd-gen",
    )


def test_litellm_proxy_keeps_its_own_model_aliases() -> None:
    ep = endpoint(provider="litellm_proxy", model="openai/gpt-4o", api_base="http://proxy:4000")
    url, _, body = sent(ep)
    assert url == "http://proxy:4000/chat/completions"
    assert body["model"] == "openai/gpt-4o"
    assert (
        sent(endpoint(provider="litellm_proxy", model="litellm_proxy/x", api_base="http://p"))[2][
            "model"
        ]
        == "x"
    )


def test_ollama_generates_with_litellms_prompt_and_ollama_chat_chats() -> None:
    # litellm 1.69.3 llms/ollama/completion/transformation.py: `provider: ollama` posts to
    # /api/generate with ollama_pt's prompt; `ollama_chat` is /api/chat.
    ep = endpoint(
        provider="ollama", model="ollama/llama3.1", api_base="http://o:1", num_ctx=4096,
        keep_alive="5m",
    )  # fmt: skip
    url, _, body = sent(ep)
    assert url == "http://o:1/api/generate"
    assert body == {
        "model": "llama3.1",
        "prompt": "### User:\nroute me\n\n",
        "options": {"temperature": 0.0, "num_predict": 1, "num_ctx": 4096},
        "keep_alive": "5m",
        "stream": False,
    }
    chat = endpoint({"OLLAMA_API_BASE": "http://env:2"}, provider="ollama_chat", model="llama3")
    url, _, body = sent(chat)
    assert url == "http://env:2/api/chat"
    assert body["messages"] == [{"role": "user", "content": "route me"}]
    text = endpoint(
        provider="ollama", model="l", api_base="http://o:1", use_chat_completions_endpoint=False
    )
    assert sent(text)[2]["prompt"] == "route me"
    with pytest.raises(ValueError, match="OLLAMA_API_BASE"):
        endpoint({}, provider="ollama", model="l")


def test_bedrock_converse_request_is_signed() -> None:
    ep = bedrock_with_keys(
        "bedrock/anthropic.claude-3-haiku-20240307-v1:0", "eu-central-1", top_k=5
    )
    url, headers, body = sent(ep)
    assert url == (
        "https://bedrock-runtime.eu-central-1.amazonaws.com/model/"
        "anthropic.claude-3-haiku-20240307-v1%3A0/converse"
    )
    assert (
        headers["Authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AWS_KEY_ID}/")
        and "/eu-central-1/bedrock/aws4_request" in headers["Authorization"]
    )
    assert "X-Amz-Date" in headers
    assert body == {
        "messages": [{"role": "user", "content": [{"text": "route me"}]}],
        "inferenceConfig": {"maxTokens": 1, "temperature": 0.0},
        "additionalModelRequestFields": {"top_k": 5},
    }


def test_bedrock_session_token_is_signed_with_the_keys() -> None:
    ep = bedrock_with_keys("amazon.nova-lite-v1:0", "us-west-2", aws_session_token="token-temp")
    _, headers, _ = sent(ep)
    assert headers["X-Amz-Security-Token"] == "token-temp"
    assert "x-amz-security-token" in headers["Authorization"].split("SignedHeaders=")[1]


def test_bedrock_region_from_the_environment_and_credentials_from_botocores_chain() -> None:
    # Without keys of its own, the deployment's credentials are botocore's default chain:
    # resolved on the first call, off the event loop (tests/integration/
    # test_llm_bedrock_credentials.py), never when the provider is built.
    ep = endpoint({"AWS_DEFAULT_REGION": "us-west-2"}, provider="bedrock", model="nova:0")
    assert ep.url.startswith("https://bedrock-runtime.us-west-2.amazonaws.com/")
    assert ep.signer is not None and "botocore's default chain" in repr(ep.signer)
    with pytest.raises(ValueError, match="aws_region_name"):
        endpoint({}, provider="bedrock", model="m", aws_access_key_id="a")
    with pytest.raises(ValueError, match="aws_access_key_id and aws_secret_access_key together"):
        endpoint({"AWS_REGION": "us-east-1"}, provider="bedrock", model="m", aws_access_key_id="a")


def test_unknown_keys_pass_through_and_override_defaults() -> None:
    ep = endpoint(
        provider="openai", model="gpt-3.5-turbo", api_key=KEY, temperature=0.3, seed=42, user="x"
    )
    body = sent(ep)[2]
    assert body["temperature"] == 0.3
    assert body["seed"] == 42 and body["user"] == "x"
    assert body["max_tokens"] == 1


def test_answers_are_read_per_format() -> None:
    openai = endpoint(provider="openai", model="gpt-4o", api_key=KEY)
    answer = openai.answer(
        {
            "choices": [{"message": {"role": "assistant", "content": " A"}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 1},
        }
    )
    assert (answer.text, answer.usage.prompt_tokens, answer.usage.total_tokens) == (" A", 12, 13)
    assert openai.answer({"choices": [{"message": {"content": None}}]}).text == ""
    text = endpoint(
        provider="self-hosted", model="m", api_base="http://h", use_chat_completions_endpoint=False
    )
    assert text.answer({"choices": [{"text": "B"}]}).text == "B"
    ollama = endpoint(provider="ollama_chat", model="m", api_base="http://o")
    got = ollama.answer({"message": {"content": "C"}, "prompt_eval_count": 9, "eval_count": 1})
    assert (got.text, got.usage.total_tokens) == ("C", 10)
    generate = endpoint(provider="ollama", model="m", api_base="http://o")
    assert generate.answer({"response": "B"}).text == "B"
    bedrock = bedrock_with_keys()
    got = bedrock.answer(
        {
            "output": {"message": {"content": [{"text": "A"}]}},
            "usage": {"inputTokens": 5, "outputTokens": 1},
        }
    )
    assert (got.text, got.usage.prompt_tokens) == ("A", 5)
    with pytest.raises(ValueError, match="unreadable"):
        openai.answer({"nope": True})
    with pytest.raises(ValueError, match="unreadable"):
        bedrock.answer([1, 2])


def test_model_name_only_removes_the_providers_own_prefix() -> None:
    def name(provider: str, model: str) -> str | None:
        keys = {"provider": provider, "model": model, "api_base": "http://x"}
        return model_name(Deployment.model_validate(keys))

    assert name("openai", "openai/gpt-4o") == "gpt-4o"
    assert name("openai", "azure/gpt-4o") == "azure/gpt-4o"
    assert name("bedrock", "bedrock/converse/amazon.nova") == "amazon.nova"
    assert name("ollama", "ollama/llama3") == "llama3"
    assert name("ollama_chat", "ollama_chat/llama3") == "llama3"
    assert name("self-hosted", "Qwen/Qwen2") == "Qwen/Qwen2"
    assert name("self-hosted", "hosted_vllm/Qwen2") == "Qwen2"
    assert name("rasa", "openai/x") == "x"  # Rasa's prefix of provider rasa is openai


def test_native_providers_and_the_rest() -> None:
    for provider in ("openai", "azure", "self-hosted", "ollama", "ollama_chat", "litellm_proxy"):
        assert is_native(provider)
    assert is_native("rasa") and is_native("bedrock")
    assert not is_native("anthropic") and not is_native("gemini")


def test_error_text_reads_provider_messages() -> None:
    assert error_text(500, b'{"error": {"message": "boom"}}') == "HTTP 500: boom"
    assert error_text(429, b'{"message": "Too many requests"}') == "HTTP 429: Too many requests"
    assert error_text(500, b'{"error": "model not found"}') == "HTTP 500: model not found"
    assert error_text(502, b"<html>bad gateway</html>") == "HTTP 502: <html>bad gateway</html>"
    assert error_text(503, b"") == "HTTP 503"


def test_reprs_never_show_secrets() -> None:
    ep = endpoint(provider="openai", model="gpt-4o", api_key=KEY)
    request = ep.request("hi")
    assert KEY not in repr(ep)
    assert KEY not in repr(request)
    assert "Authorization" in repr(request)
