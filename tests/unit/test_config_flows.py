"""NLU triggers from Rasa flows: a file or a directory, both trigger forms, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.config.errors import ConfigError
from worker.config.flows import load_flow_triggers

FIXTURES = Path(__file__).parent.parent / "fixtures" / "config"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def problems_of(text: str) -> list[str]:
    Path("flows.yml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_flow_triggers(Path("flows.yml"))
    return caught.value.problems


def test_no_flows_means_no_triggers() -> None:
    assert len(load_flow_triggers(None)) == 0


def test_flows_file_with_both_trigger_forms() -> None:
    triggers = load_flow_triggers(FIXTURES / "flows" / "transfers.yml")
    assert len(triggers) == 2
    # `- intent: x` has Rasa's default threshold 0.0: any confidence matches.
    assert triggers.matches("transfer_money", 0.0)
    assert triggers.matches("add_payee", 0.8)
    assert not triggers.matches("add_payee", 0.79)
    assert not triggers.matches("block_card", 1.0)


def test_flows_directory_is_read_recursively_skipping_files_without_flows() -> None:
    triggers = load_flow_triggers(FIXTURES / "flows")
    # transfers.yml (2) + nested/cards.yaml (2); nlu.yml has no `flows:`, notes.txt is not YAML.
    assert len(triggers) == 4
    assert triggers.matches("block_card", 0.1)
    assert triggers.matches("lost_card", 0.5)
    assert not triggers.matches("lost_card", 0.49)
    assert not triggers.matches("greet", 1.0)


def test_missing_path_is_an_error(workdir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_flow_triggers(Path("data/flows"))
    assert caught.value.problems == ["data/flows: flows file or directory not found"]


def test_trigger_without_intent(workdir: Path) -> None:
    assert problems_of("flows:\n  pay:\n    nlu_trigger:\n      - name: pay\n") == [
        "flows.yml: flows.pay.nlu_trigger[0]: must be `- intent: name` or `- intent: {name: …}`"
    ]


def test_trigger_list_must_be_a_list(workdir: Path) -> None:
    assert problems_of("flows:\n  pay:\n    nlu_trigger:\n      intent: pay\n") == [
        "flows.yml: flows.pay.nlu_trigger: must be a list of `- intent:`"
    ]


def test_trigger_mapping_needs_a_name(workdir: Path) -> None:
    text = "flows:\n  pay:\n    nlu_trigger:\n      - intent: {confidence_threshold: 0.5}\n"
    assert problems_of(text) == [
        "flows.yml: flows.pay.nlu_trigger[0].intent.name: must be an intent name"
    ]


@pytest.mark.parametrize("threshold", ["high", "1.5", "-0.1", "true"])
def test_threshold_must_be_a_number_between_0_and_1(workdir: Path, threshold: str) -> None:
    text = (
        "flows:\n  pay:\n    nlu_trigger:\n"
        f"      - intent: {{name: pay, confidence_threshold: {threshold}}}\n"
    )
    assert problems_of(text) == [
        "flows.yml: flows.pay.nlu_trigger[0].intent.confidence_threshold: "
        "must be a number between 0 and 1"
    ]


def test_unknown_trigger_keys(workdir: Path) -> None:
    text = "flows:\n  pay:\n    nlu_trigger:\n      - intent: {name: pay, threshold: 0.5}\n"
    assert problems_of(text) == [
        "flows.yml: flows.pay.nlu_trigger[0].intent: unknown key(s) threshold"
    ]


def test_flow_must_be_a_mapping(workdir: Path) -> None:
    assert problems_of("flows:\n  pay: [a, b]\n") == [
        "flows.yml: flows.pay: a flow must be a mapping (description, steps…)"
    ]


def test_every_problem_is_reported(workdir: Path) -> None:
    text = (
        "flows:\n"
        "  pay:\n    nlu_trigger:\n      - intent: ''\n"
        "  save:\n    nlu_trigger:\n      - intent: save\n      - 3\n"
    )
    assert len(problems_of(text)) == 2


def test_duplicate_flow_id_across_files(workdir: Path) -> None:
    Path("flows").mkdir()
    Path("flows/a.yml").write_text("flows:\n  pay:\n    steps: []\n")
    Path("flows/b.yml").write_text("flows:\n  pay:\n    steps: []\n")
    with pytest.raises(ConfigError) as caught:
        load_flow_triggers(Path("flows"))
    assert caught.value.problems == [
        "flows/b.yml: flows.pay: flow id already defined in flows/a.yml"
    ]


def test_yaml_error_in_a_flows_directory_names_file_and_line(workdir: Path) -> None:
    Path("flows").mkdir()
    Path("flows/a.yml").write_text("flows:\n  pay:\n    steps: [\n")
    with pytest.raises(ConfigError) as caught:
        load_flow_triggers(Path("flows"))
    [line] = caught.value.problems
    assert line.startswith("flows/a.yml:4: invalid YAML")
