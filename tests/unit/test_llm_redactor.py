"""The redactor: secrets learnt while it is in use (from any thread), the environment's
credential variables, and texts bounded before redaction without leaving part of a secret."""

from __future__ import annotations

import threading

from worker.llm.netrc_auth import BasicCredentials
from worker.llm.providers import error_text
from worker.llm.redaction import Redactor, cut, environment_secrets


def test_a_secret_learnt_later_is_redacted_from_then_on() -> None:
    redactor = Redactor(["first-secret-value"])
    assert redactor("first-secret-value then token-obtained-later") == (
        "*** then token-obtained-later"
    )
    redactor.learn(["token-obtained-later", None, "abc"])  # None and short values: skipped
    assert redactor("first-secret-value then token-obtained-later") == "*** then ***"
    assert redactor.knows("token-obtained-later") and not redactor.knows("abc")
    assert repr(redactor) == "Redactor(2 secrets)"


def test_the_longest_secret_is_replaced_whole() -> None:
    redactor = Redactor(["secret-1"])
    redactor.learn(["secret-1-and-more"])
    assert redactor("got secret-1-and-more") == "got ***"


def test_secrets_learnt_from_another_thread() -> None:
    redactor = Redactor()
    threads = [
        threading.Thread(target=redactor.learn, args=([f"thread-secret-{n:03d}"],))
        for n in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    text = " ".join(f"thread-secret-{n:03d}" for n in range(20))
    assert redactor(text) == " ".join(["***"] * 20)


def test_the_environments_credential_variables() -> None:
    environ = {
        "ANTHROPIC_API_KEY": "sk-ant-api03-value",
        "GEMINI_API_KEY": "gemini-key-value",
        "HUGGINGFACE_API_KEY": "hf_value_12345",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
        "AWS_SESSION_TOKEN": "aws-session-token",
        "RASA_PRO_LICENSE": "license-value-123",
        "DB_PASSWORD": "db-password-value",
        "SOME_TOKEN": "true",  # too short to be a secret
        "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/token",  # a path, not a credential
        "HOME": "/home/worker-user",
        "OPENAI_API_BASE": "https://api.example/v1",
    }
    assert sorted(environment_secrets(environ)) == sorted(
        [
            "sk-ant-api03-value",
            "gemini-key-value",
            "hf_value_12345",
            "aws-secret-value",
            "aws-session-token",
            "license-value-123",
            "db-password-value",
        ]
    )


def test_a_text_is_cut_between_words_so_no_part_of_a_secret_remains() -> None:
    assert cut("short", 10) == "short"
    assert cut("one two three", 6) == "one …"
    assert cut("one two three", 7) == "one two …"
    assert cut("onelongword", 4) == "…"
    secret = "deployment-secret-0123456789abcdef"
    # Whatever its position, a secret cut by the bound is gone whole, not half redacted.
    redactor = Redactor([secret])
    for filler in [*range(170, 210), *range(990, 1030)]:
        body = ("x" * filler + " " + secret + " tail").encode()
        said = redactor(error_text(401, body))
        fragments = [secret[i : i + 6] for i in range(len(secret) - 5)]
        assert not any(fragment in said for fragment in fragments), (filler, said)


def test_basic_credentials_name_their_header_as_a_secret_too() -> None:
    credentials = BasicCredentials("user", "netrc-password-1")
    header = credentials.header()
    assert header.startswith("Basic ")
    redactor = Redactor(credentials.secrets())
    assert redactor(f"echo {header} and netrc-password-1") == "echo Basic *** and ***"
