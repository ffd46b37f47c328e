"""The release table (worker/rasa/releases.py) against what the wheels say, and the README's
copy of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.rasa.releases import (
    NEWEST_OF_LINE,
    RELEASES,
    MissingPrompt,
    PayloadRouting,
    Release,
    UnknownRasaVersion,
    behaviour_of,
    markdown_table,
    rasa_version,
)

README = Path(__file__).resolve().parents[2] / "README.md"

# dialogue_understanding/coexistence/router_template.jinja2 of 3.11.0 and 3.11.20 (and every
# release to 3.15.36), as LLMBasedRouter uses it: stripped.
_HEAD = (
    "You have to forward the user message to the right assistant.\n\n"
    "The following assistants are available:\n\n"
    "Assistant A: {{ calm_entry_sticky }}\n"
    "Assistant B: {{ nlu_entry_non_sticky }}\n"
    "Assistant C: {{ nlu_entry_sticky }}\n\n"
    'The user said: """{{ user_message }}"""\n\n'
)
TEMPLATE_3_11 = (
    _HEAD + "Answer which assistant needs to get this message:\n"
    "The message is for the assistant with the letter"
)
# The same file of 3.21.0 (and every release from 3.16.0).
TEMPLATE_3_16 = (
    _HEAD + "Answer which assistant needs to get this message.\n"
    "Respond with exactly one character: A, B, or C.\n"
    "Do not output any other words, punctuation, or explanation."
)


@pytest.mark.parametrize(
    ("version", "template"),
    [("3.11.0", TEMPLATE_3_11), ("3.11.20", TEMPLATE_3_11), ("3.15.36", TEMPLATE_3_11),
     ("3.16.0", TEMPLATE_3_16), ("3.21.0", TEMPLATE_3_16)],
)  # fmt: skip
def test_default_template_character_for_character(version: str, template: str) -> None:
    assert rasa_version(version).behaviour.template_text == template


@pytest.mark.parametrize(
    ("version", "model", "token_key", "bias", "effort", "temperature"),
    [
        # llm_based_router.py DEFAULT_LLM_CONFIG with shared/utils/llm.py's model names
        ("3.11.0", "gpt-3.5-turbo", "max_tokens", (362, 426, 356), None, 0.0),
        ("3.11.13", "gpt-3.5-turbo", "max_tokens", (362, 426, 356), None, 0.0),
        ("3.11.14", "gpt-3.5-turbo", "max_completion_tokens", (362, 426, 356), None, 0.0),
        ("3.11.20", "gpt-3.5-turbo", "max_completion_tokens", (362, 426, 356), None, 0.0),
        ("3.12.0", "gpt-3.5-turbo", "max_tokens", (362, 426, 356), None, 0.0),
        ("3.12.14", "gpt-3.5-turbo", "max_completion_tokens", (362, 426, 356), None, 0.0),
        ("3.13.0", "gpt-4o-2024-11-20", "max_completion_tokens", (355, 418, 363), None, 0.0),
        ("3.14.29", "gpt-4o-2024-11-20", "max_completion_tokens", (355, 418, 363), None, 0.0),
        ("3.16.0", "gpt-5-mini-2025-08-07", None, (), "minimal", 1.0),
        ("3.21.0", "gpt-5-mini-2025-08-07", None, (), "minimal", 1.0),
    ],
)
def test_router_llm_defaults(
    version: str,
    model: str,
    token_key: str | None,
    bias: tuple[int, ...],
    effort: str | None,
    temperature: float,
) -> None:
    llm = rasa_version(version).behaviour.llm
    assert (llm.model, llm.token_limit_key, llm.logit_bias_ids, llm.reasoning_effort) == (
        model,
        token_key,
        bias,
        effort,
    )
    assert (llm.temperature, llm.timeout, llm.merged_into) == (
        temperature,
        7.0,
        frozenset({"openai"}),
    )


@pytest.mark.parametrize(
    ("version", "keys", "missing", "payload_routing", "lists"),
    [
        # llm_based_router.py __init__; shared/utils/llm.py get_prompt_template;
        # core/processor.py _determine_route_to_calm_slot_value; command_payload_reader.py
        ("3.11.0", ("prompt",), MissingPrompt.DEFAULT, PayloadRouting.ANY_COMMAND, False),
        ("3.11.16", ("prompt",), MissingPrompt.DEFAULT, PayloadRouting.USER_COMMAND, False),
        ("3.12.41", ("prompt",), MissingPrompt.DEFAULT, PayloadRouting.USER_COMMAND, False),
        ("3.12.42", ("prompt",), MissingPrompt.REFUSED, PayloadRouting.USER_COMMAND, True),
        ("3.13.18", ("prompt_template", "prompt"), MissingPrompt.DEFAULT,
         PayloadRouting.USER_COMMAND, False),
        ("3.13.19", ("prompt_template", "prompt"), MissingPrompt.REFUSED,
         PayloadRouting.USER_COMMAND, True),
        ("3.14.6", ("prompt_template", "prompt"), MissingPrompt.DEFAULT,
         PayloadRouting.USER_COMMAND, False),
        ("3.15.3", ("prompt_template", "prompt"), MissingPrompt.REFUSED,
         PayloadRouting.USER_COMMAND, True),
        ("3.21.0", ("prompt_template", "prompt"), MissingPrompt.REFUSED,
         PayloadRouting.USER_COMMAND, True),
    ],
)  # fmt: skip
def test_prompt_and_payload_columns(
    version: str,
    keys: tuple[str, ...],
    missing: MissingPrompt,
    payload_routing: PayloadRouting,
    lists: bool,
) -> None:
    row = rasa_version(version).behaviour
    assert (row.prompt_keys, row.missing_prompt) == (keys, missing)
    assert (row.payload_routing, row.set_slots_lists) == (payload_routing, lists)


def test_patterns_per_release() -> None:
    # dialogue_understanding/patterns/default_flows_for_patterns.yml
    old = {
        flow.flow_id: flow.trigger_intents
        for flow in behaviour_of(Release(3, 11, 20)).patterns.flows
    }
    new = {
        flow.flow_id: flow.trigger_intents
        for flow in behaviour_of(Release(3, 21, 0)).patterns.flows
    }
    assert {k: v for k, v in old.items() if v} == {
        "pattern_restart": ("restart",),
        "pattern_session_start": ("session_start",),
        "pattern_user_silence": ("silence_timeout",),
    }
    assert {k: v for k, v in new.items() if v} == {
        "pattern_restart": ("restart",),
        "pattern_session_end": ("session_end",),
        "pattern_session_start": ("session_start",),
        "pattern_user_silence": ("silence_timeout",),
    }


def test_every_published_release_has_exactly_one_row() -> None:
    for line, newest in NEWEST_OF_LINE.items():
        for patch in range(newest.patch + 1):
            release = Release(newest.major, newest.minor, patch)
            assert sum(row.covers(release) for row in RELEASES) == 1, f"{line}.{patch}"
    for before, after in zip(RELEASES, RELEASES[1:], strict=False):
        assert before.last < after.first


def test_a_line_means_its_newest_release() -> None:
    assert str(rasa_version("3.11").release) == "3.11.20"
    assert str(rasa_version("3.12").release) == "3.12.42"
    assert str(rasa_version(" 3.21 ").release) == "3.21.0"
    assert str(rasa_version().release) == "3.11.20"  # the default: the newest 3.11


@pytest.mark.parametrize("version", ["3.10", "3.10.5", "3.22", "4.0.0", "3.11.21", "latest", ""])
def test_unknown_versions_are_refused_listing_the_supported_ones(version: str) -> None:
    with pytest.raises(UnknownRasaVersion) as caught:
        rasa_version(version)
    message = str(caught.value)
    assert "supported releases: 3.11.0–3.11.20, 3.12.0–3.12.42" in message
    assert message.endswith("3.20.0–3.20.5, 3.21.0")


def test_readme_has_the_table() -> None:
    assert markdown_table() in README.read_text()
