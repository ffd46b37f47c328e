"""Rasa's config.yml: exactly one coexistence router, its prompt file, model-group references."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from worker.config.errors import ConfigError
from worker.config.rasa_config import ModelGroupReference, load_router_config, read_rasa_config
from worker.rasa.releases import RasaBehaviour, rasa_version
from worker.routing.router_config import (
    DEFAULT_ROUTER_TEMPLATE,
    IntentBasedRouterConfig,
    LLMBasedRouterConfig,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "config"

INTENT_ROUTER = """
  - name: IntentBasedRouter
    nlu_entry: {sticky: [handoff], non_sticky: [chitchat]}
    calm_entry: {sticky: [transfer_money]}
"""
LLM_ROUTER = """
  - name: LLMBasedRouter
    calm_entry: {sticky: handles transfers}
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_config(pipeline: str, name: str = "config.yml") -> Path:
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("pipeline:\n  - name: WhitespaceTokenizer\n" + pipeline)
    return path


# Releases that refuse a missing prompt file, and one that warns and uses the default.
REFUSES = rasa_version("3.15.36").behaviour
WARNS = rasa_version("3.11.20").behaviour


def problems_of(path: Path, rasa: RasaBehaviour = REFUSES) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_router_config(path, rasa)
    return caught.value.problems


def test_intent_based_router_with_rasa_keys() -> None:
    config = load_router_config(FIXTURES / "config_intent.yml")
    assert isinstance(config, IntentBasedRouterConfig)
    assert config.nlu_entry.sticky == ["handoff", "report_fraud"]
    assert config.nlu_entry.non_sticky == ["chitchat"]
    assert config.calm_entry.sticky == ["transfer_money"]


def test_model_group_references_of_every_component_at_any_depth() -> None:
    rasa = read_rasa_config(FIXTURES / "config_intent.yml")
    assert set(rasa.references) == {
        ModelGroupReference("commands", "pipeline[5] (CompactLLMCommandGenerator).llm"),
        ModelGroupReference(
            "embeddings", "pipeline[5] (CompactLLMCommandGenerator).flow_retrieval.embeddings"
        ),
        ModelGroupReference("commands", "policies[1] (EnterpriseSearchPolicy).llm"),
    }
    assert rasa.router_path == "pipeline[3] (IntentBasedRouter)"


def test_llm_based_router_defaults(workdir: Path) -> None:
    config = load_router_config(write_config(LLM_ROUTER))
    assert isinstance(config, LLMBasedRouterConfig)
    assert config.calm_entry.sticky == "handles transfers"
    assert config.nlu_entry.sticky == "handles everything else"
    assert config.nlu_entry.non_sticky == "handles chitchat"
    assert config.prompt_text == DEFAULT_ROUTER_TEMPLATE
    assert config.llm is None


def test_router_named_by_its_module_path(workdir: Path) -> None:
    pipeline = INTENT_ROUTER.replace(
        "IntentBasedRouter",
        "rasa.dialogue_understanding.coexistence.intent_based_router.IntentBasedRouter",
    )
    assert isinstance(load_router_config(write_config(pipeline)), IntentBasedRouterConfig)


def test_both_routers_are_refused(workdir: Path) -> None:
    assert problems_of(write_config(INTENT_ROUTER + LLM_ROUTER)) == [
        "config.yml: pipeline: holds 2 coexistence routers (pipeline[1] (IntentBasedRouter), "
        "pipeline[2] (LLMBasedRouter)); Rasa allows exactly one"
    ]


def test_no_router_is_refused(workdir: Path) -> None:
    assert problems_of(write_config("  - name: DIETClassifier\n")) == [
        "config.yml: pipeline: has no IntentBasedRouter or LLMBasedRouter; add exactly one of them"
    ]


def test_missing_pipeline_is_refused(workdir: Path) -> None:
    Path("config.yml").write_text("recipe: default.v1\n")
    assert problems_of(Path("config.yml")) == ["config.yml: pipeline: is missing"]


def test_missing_calm_entry(workdir: Path) -> None:
    pipeline = "  - name: IntentBasedRouter\n    nlu_entry: {sticky: [a], non_sticky: []}\n"
    assert problems_of(write_config(pipeline)) == [
        "config.yml: pipeline[1] (IntentBasedRouter).calm_entry: required key is missing"
    ]
    assert problems_of(write_config("  - name: LLMBasedRouter\n")) == [
        "config.yml: pipeline[1] (LLMBasedRouter).calm_entry: required key is missing"
    ]


def test_intent_router_needs_non_sticky_list(workdir: Path) -> None:
    pipeline = INTENT_ROUTER.replace(", non_sticky: [chitchat]", "")
    [line] = problems_of(write_config(pipeline))
    assert line.startswith("config.yml: pipeline[1] (IntentBasedRouter).nlu_entry: ")
    assert "non_sticky is required" in line


def test_prompt_file_relative_to_the_current_directory(workdir: Path) -> None:
    Path("prompts").mkdir()
    Path("prompts/router.jinja2").write_text("\n  Say A, B or C: {{ user_message }}\n\n")
    config = load_router_config(write_config(LLM_ROUTER + "    prompt: prompts/router.jinja2\n"))
    assert isinstance(config, LLMBasedRouterConfig)
    # Rasa strips the template it reads.
    assert config.prompt_text == "Say A, B or C: {{ user_message }}"
    assert config.prompt == "prompts/router.jinja2"


def test_prompt_file_relative_to_config_yml(workdir: Path) -> None:
    assistant = workdir / "assistant"
    assistant.mkdir()
    shutil.copy(FIXTURES / "config_llm_prompt.yml", assistant / "config.yml")
    shutil.copytree(FIXTURES / "prompts", assistant / "prompts")
    config = load_router_config(assistant / "config.yml")
    assert isinstance(config, LLMBasedRouterConfig)
    assert config.prompt_text.startswith("Route this: {{ user_message }}")
    assert config.llm == {"model_group": "router-llm"}


def test_prompt_template_key_is_read_from_rasa_3_13(workdir: Path) -> None:
    # llm_based_router.py __init__: `config.get(PROMPT_TEMPLATE_CONFIG_KEY) or
    # config.get(PROMPT_CONFIG_KEY)` from 3.13.0; 3.11 and 3.12 read `prompt` only.
    Path("router.jinja2").write_text("{{ user_message }}")
    path = write_config(LLM_ROUTER + "    prompt_template: router.jinja2\n")
    config = load_router_config(path, rasa_version("3.13.0").behaviour)
    assert isinstance(config, LLMBasedRouterConfig)
    assert (config.prompt, config.prompt_text) == ("router.jinja2", "{{ user_message }}")
    warnings: list[str] = []
    ignored = read_rasa_config(path, WARNS, warnings).router
    assert isinstance(ignored, LLMBasedRouterConfig)
    assert (ignored.prompt, ignored.prompt_text) == (None, DEFAULT_ROUTER_TEMPLATE)
    assert warnings == [
        "config.yml: pipeline[1] (LLMBasedRouter).prompt_template: Rasa 3.11.16–3.11.20 does "
        "not read prompt_template: ignored"
    ]


def test_prompt_template_wins_over_prompt(workdir: Path) -> None:
    Path("a.jinja2").write_text("A {{ user_message }}")
    Path("b.jinja2").write_text("B {{ user_message }}")
    path = write_config(LLM_ROUTER + "    prompt: a.jinja2\n    prompt_template: b.jinja2\n")
    warnings: list[str] = []
    config = read_rasa_config(path, rasa_version("3.21").behaviour, warnings).router
    assert isinstance(config, LLMBasedRouterConfig)
    assert config.prompt_text == "B {{ user_message }}"
    assert warnings == [
        "config.yml: pipeline[1] (LLMBasedRouter).prompt: ignored: Rasa 3.16.0–3.21.0 reads "
        "prompt_template first"
    ]


def test_missing_prompt_file_is_named(workdir: Path) -> None:
    assert problems_of(write_config(LLM_ROUTER + "    prompt: prompts/missing.jinja2\n")) == [
        "config.yml: pipeline[1] (LLMBasedRouter).prompt: prompt file prompts/missing.jinja2 not "
        "found (looked in the current directory); Rasa 3.15.3–3.15.36 refuses it"
    ]


def test_missing_prompt_file_warns_where_rasa_uses_the_default(workdir: Path) -> None:
    # shared/utils/llm.py get_prompt_template of 3.11.20: a warning and the default template.
    warnings: list[str] = []
    path = write_config(LLM_ROUTER + "    prompt: prompts/missing.jinja2\n")
    config = read_rasa_config(path, WARNS, warnings).router
    assert isinstance(config, LLMBasedRouterConfig)
    assert config.prompt_text == DEFAULT_ROUTER_TEMPLATE
    assert warnings == [
        "config.yml: pipeline[1] (LLMBasedRouter).prompt: prompt file prompts/missing.jinja2 not "
        "found (looked in the current directory): Rasa's default template is used, as Rasa "
        "3.11.16–3.11.20 does"
    ]


def test_missing_prompt_file_next_to_config_yml_names_both_places(workdir: Path) -> None:
    [line] = problems_of(write_config(LLM_ROUTER + "    prompt: p.jinja2\n", "bot/config.yml"))
    assert line == (
        "bot/config.yml: pipeline[1] (LLMBasedRouter).prompt: prompt file p.jinja2 not found "
        "(looked in the current directory and in bot); Rasa 3.15.3–3.15.36 refuses it"
    )


def test_prompt_that_does_not_compile(workdir: Path) -> None:
    Path("bad.jinja2").write_text("line one\n{% if user_message %}\nno endif\n")
    [line] = problems_of(write_config(LLM_ROUTER + "    prompt: bad.jinja2\n"))
    assert line.startswith("bad.jinja2:")
    assert "prompt template does not compile" in line


def test_prompt_with_an_unknown_filter(workdir: Path) -> None:
    Path("bad.jinja2").write_text("{{ user_message | shout }}")
    [line] = problems_of(write_config(LLM_ROUTER + "    prompt: bad.jinja2\n"))
    assert line == "bad.jinja2:1: prompt template does not compile: No filter named 'shout'."


def test_other_keys_are_reported_together_with_a_prompt_problem(workdir: Path) -> None:
    pipeline = "  - name: LLMBasedRouter\n    prompt: missing.jinja2\n"
    problems = problems_of(write_config(pipeline))
    assert len(problems) == 2
    assert problems[0].startswith("config.yml: pipeline[1] (LLMBasedRouter).prompt: prompt file")
    assert problems[1] == (
        "config.yml: pipeline[1] (LLMBasedRouter).calm_entry: required key is missing"
    )


def test_yaml_syntax_error_names_the_line(workdir: Path) -> None:
    Path("config.yml").write_text("pipeline:\n  - name: IntentBasedRouter\n    nlu_entry: [a\n")
    [line] = problems_of(Path("config.yml"))
    assert line.startswith("config.yml:4: invalid YAML")


def test_model_group_reference_must_be_an_id(workdir: Path) -> None:
    pipeline = INTENT_ROUTER + "  - name: CompactLLMCommandGenerator\n    llm: {model_group: 3}\n"
    assert problems_of(write_config(pipeline)) == [
        "config.yml: pipeline[2] (CompactLLMCommandGenerator).llm.model_group: "
        "must be a model group id (text)"
    ]
