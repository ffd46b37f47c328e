"""A real `coexistence-router run` whose router group is made of deployments that echo every
header they receive in their error bodies: keys from the environment, the Rasa license, a
Bedrock API key from endpoints.yml, netrc and proxy credentials, Entra ID tokens and AWS
temporary credentials obtained (and refreshed) from a loopback STS — each one reaches a
deployment and comes back, and none appears in the worker's logs (at DEBUG), its inbox records
or its `/metrics`.

(Errors and reprs in process, and AWS_BEARER_TOKEN_BEDROCK and the keys litellm reads itself:
tests/integration/test_llm_redaction.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
from aiokafka import ConsumerRecord

from tests.fake_entra import FakeEntra
from tests.fake_sts import FakeSts
from tests.integration.test_llm_redaction import NETRC_PASSWORD, PROXY_PASSWORD, Echo, basic
from tests.kafka_support import TopicReader, produce, routed, user_message
from tests.worker_processes import WorkerProcess, wait_for_balanced_group, write_bundle
from worker.fake_llm import FakeLLMServer
from worker.kafka.broker import free_loopback_port

SECRETS = {
    "OPENAI_API_KEY": "run-openai-env-key-0d9a3c",
    "AZURE_API_KEY": "run-azure-env-key-7b21ef",
    "RASA_LICENSE": "run-rasa-license-5c8e0a",
    "BEDROCK_API_KEY": "run-bedrock-api-key-e41b9d",
    "AZURE_CLIENT_SECRET": "run-entra-client-secret-2a7f",
}
WEB_IDENTITY_TOKEN = "run-web-identity-token-6f03bc"
SENDERS = [f"secrets-sender-{i}" for i in range(4)]


def model_groups(echo: Echo, entra: FakeEntra) -> list[dict[str, object]]:
    base = f"http://127.0.0.1:{echo.port}"
    return [
        {
            "id": "router-llm",
            "models": [
                {"provider": "openai", "model": "echo-openai", "api_base": f"{base}/v1"},
                {
                    "provider": "azure",
                    "deployment": "echo-azure",
                    "api_base": base,
                    "api_version": "2024-06-01",
                },
                {"provider": "rasa", "model": "echo-rasa", "api_base": f"{base}/v1"},
                {
                    "provider": "ollama_chat",
                    "model": "echo-netrc",
                    "api_base": f"http://localhost:{echo.port}",
                },
                {
                    "provider": "litellm_proxy",
                    "model": "echo-proxied",
                    "api_base": "http://127.0.0.2:9/v1",
                    "api_key": "${BEDROCK_API_KEY}",
                },
                {
                    "provider": "bedrock",
                    "model": "echo-bedrock-key",
                    "api_base": base,
                    "aws_region_name": "us-east-1",
                    "api_key": "${BEDROCK_API_KEY}",
                },
                {
                    # botocore's chain: IRSA web identity, at the loopback STS
                    "provider": "bedrock",
                    "model": "echo-bedrock-irsa",
                    "api_base": base,
                    "aws_region_name": "us-east-1",
                },
                {
                    "provider": "azure",
                    "deployment": "echo-entra",
                    "api_base": base,
                    "api_version": "2024-10-21",
                    "oauth": {
                        "type": "azure_entra_id_client_secret",
                        "client_id": "worker-app",
                        "client_secret": "${AZURE_CLIENT_SECRET}",
                        "tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47",
                        "authority_host": entra.authority,
                        "disable_instance_discovery": True,
                        "scopes": "https://cognitiveservices.azure.com/.default",
                    },
                },
            ],
            "router": {"num_retries": 7},
        }
    ]


async def test_no_secret_in_the_logs_records_or_metrics_of_a_run(
    bootstrap: str, fake: FakeLLMServer, tmp_path: Path
) -> None:
    async with (
        Echo() as echo,
        FakeEntra(tmp_path, opaque=True) as entra,
        FakeSts(fake, lifetime=11 * 60) as sts,  # due again at each call: refreshed
    ):
        bundle = write_bundle(tmp_path / "bundle", bootstrap, router="llm", llm_url=fake.url)
        endpoints = json.loads(bundle.endpoints.read_text())
        endpoints["model_groups"] = model_groups(echo, entra)
        bundle.endpoints.write_text(json.dumps(endpoints))
        token_file = tmp_path / "web-identity-token"
        token_file.write_text(WEB_IDENTITY_TOKEN)
        netrc = tmp_path / "netrc"
        netrc.write_text(f"machine localhost login worker password {NETRC_PASSWORD}\n")
        for name in [n for n in bundle.env if n.startswith("AWS_")]:
            del bundle.env[name]
        bundle.env.update(
            SECRETS,
            AWS_WEB_IDENTITY_TOKEN_FILE=str(token_file),
            AWS_ROLE_ARN="arn:aws:iam::123456789012:role/bedrock-caller",
            AWS_ROLE_SESSION_NAME="worker",
            AWS_ENDPOINT_URL_STS=sts.url,
            AWS_CONFIG_FILE=str(tmp_path / "aws-config"),
            AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "aws-credentials"),
            AWS_EC2_METADATA_DISABLED="true",
            NETRC=str(netrc),
            HTTP_PROXY=f"http://proxyuser:{PROXY_PASSWORD}@127.0.0.1:{echo.port}",
            NO_PROXY="127.0.0.1,localhost",
            RASA_CA_BUNDLE=str(entra.ca_path),
        )
        port = free_loopback_port()
        worker = await WorkerProcess.start(
            bundle,
            args=[
                "--rasa-version", "3.15.36",  # Entra ID, the Bedrock API key, RASA_LICENSE
                "--log-level", "DEBUG",
                "--http-port", str(port),
                "--http-host", "127.0.0.1",
            ],
        )  # fmt: skip
        records: list[ConsumerRecord[bytes, bytes]] = []
        try:
            await wait_for_balanced_group([worker], 6)
            async with TopicReader(bootstrap, bundle.topics.calm, bundle.topics.nlu) as inboxes:
                # Two waves: the second finds the AWS credentials due, and refreshes them.
                for wave in (SENDERS[:2], SENDERS[2:]):
                    messages = [user_message(sender, "hello there") for sender in wave]
                    await produce(bootstrap, bundle.topics.input, messages)
                    records = await inboxes.wait_for(len(records) + len(wave), timeout=60)
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{port}/metrics") as response,
            ):
                metrics = await response.text()
        finally:
            assert await worker.stop() == 0, worker.output
        tokens, issued = list(entra.issued), list(sts.issued)
    assert {routed(r)["routing"]["reason"] for r in records} == {"llm_failure"}
    sent = [
        *(v for k, v in SECRETS.items() if k != "AZURE_CLIENT_SECRET"),
        basic("worker", NETRC_PASSWORD),
        basic("proxyuser", PROXY_PASSWORD),
        *tokens,
        *(i.session_token for i in issued),
    ]
    received = " ".join(echo.received)
    for secret in sent:
        assert secret in received, secret  # each reached a deployment and came back
    assert len(issued) > 1  # refreshed while the worker ran
    said = {
        "logs": worker.output,
        "records": b" ".join(r.value or b"" for r in records).decode(),
        "metrics": metrics,
    }
    assert "***" in said["logs"]  # the echoes were logged, redacted
    secrets = [
        *sent,
        SECRETS["AZURE_CLIENT_SECRET"],
        NETRC_PASSWORD,
        PROXY_PASSWORD,
        WEB_IDENTITY_TOKEN,
        *(i.secret_key for i in issued),
    ]
    for where, text in said.items():
        for secret in secrets:
            assert secret not in text, (where, secret)
