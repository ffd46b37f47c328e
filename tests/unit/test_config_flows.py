"""Rasa flows: NLU triggers and collect steps from a file or a directory, refused where Rasa
refuses them (shared/core/flows/flows_yaml_schema.json, validation.py, nlu_trigger.py of
3.11.20; the same rules in every release to 3.21.0)."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.config.errors import ConfigError
from worker.config.flows import load_flows
from worker.routing.flows import Flow, NluTrigger

FIXTURES = Path(__file__).parent.parent / "fixtures" / "config"
STEPS = "    description: d\n    steps: [{action: a}]\n"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def flows_of(text: str, warnings: list[str] | None = None) -> list[Flow]:
    Path("flows.yml").write_text(text)
    return load_flows(Path("flows.yml"), warnings)


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        flows_of(text)
    return caught.value.problems


def one_flow(trigger: str) -> str:
    return f"flows:\n  pay:\n{STEPS}    nlu_trigger:\n{trigger}"


def test_no_flows_means_none() -> None:
    assert load_flows(None) == []


def test_flows_file_with_both_trigger_forms_and_collects() -> None:
    assert load_flows(FIXTURES / "flows" / "transfers.yml") == [
        Flow("transfer_money", (NluTrigger("transfer_money", "transfer_money"),), ("amount",)),
        Flow("add_payee", (NluTrigger("add_payee", "add_payee", 0.8),), ("payee",)),
    ]


def test_flows_directory_is_read_recursively_skipping_files_without_flows() -> None:
    flows = load_flows(FIXTURES / "flows")
    # nested/cards.yaml, transfers.yml; nlu.yml has no `flows:`, notes.txt is not YAML.
    assert [flow.id for flow in flows] == [
        "block_card",
        "replace_card",
        "transfer_money",
        "add_payee",
    ]
    assert flows[0].triggers == (
        NluTrigger("block_card", "block_card"),
        NluTrigger("block_card", "lost_card", 0.5),
    )


def test_missing_path_is_an_error(workdir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_flows(Path("data/flows"))
    assert caught.value.problems == ["data/flows: flows file or directory not found"]


@pytest.mark.parametrize("threshold", ["1.5", "-0.1", "7"])
def test_any_number_is_a_threshold_as_in_rasa(workdir: Path, threshold: str) -> None:
    [flow] = flows_of(
        one_flow(f"      - intent: {{name: pay, confidence_threshold: {threshold}}}\n")
    )
    assert flow.triggers == (NluTrigger("pay", "pay", float(threshold)),)


@pytest.mark.parametrize("threshold", ["high", "'0.5'", "true"])
def test_threshold_must_be_a_number(workdir: Path, threshold: str) -> None:
    text = one_flow(f"      - intent: {{name: pay, confidence_threshold: {threshold}}}\n")
    assert problems_of(text) == [
        "flows.yml: flows.pay.nlu_trigger[0].intent.confidence_threshold: must be a number"
    ]


def test_intent_mapping_may_carry_other_keys(workdir: Path) -> None:
    # The schema's intent object does not forbid other keys.
    [flow] = flows_of(one_flow("      - intent: {name: pay, threshold: 0.5}\n"))
    assert flow.triggers == (NluTrigger("pay", "pay"),)


def test_item_with_an_intent_mapping_and_another_key_is_refused(workdir: Path) -> None:
    assert problems_of(one_flow("      - intent: {name: pay}\n        other: 1\n")) == [
        "flows.yml: flows.pay.nlu_trigger[0]: unknown key(s) other"
    ]


def test_every_text_value_of_an_item_is_an_intent_with_a_warning(workdir: Path) -> None:
    # NLUTriggers.from_json reads every value, so `- name: pay` triggers on `pay`.
    warnings: list[str] = []
    [flow] = flows_of(one_flow("      - name: pay\n"), warnings)
    assert flow.triggers == (NluTrigger("pay", "pay"),)
    assert warnings == [
        "flows.yml: flows.pay.nlu_trigger[0].name: Rasa reads 'pay' as a trigger intent"
    ]


@pytest.mark.parametrize("trigger", ["      intent: pay\n", "      []\n", "      null\n"])
def test_nlu_trigger_must_be_a_non_empty_list(workdir: Path, trigger: str) -> None:
    assert problems_of(one_flow(trigger)) == [
        "flows.yml: flows.pay.nlu_trigger: must be a non-empty list of `- intent: …` items"
    ]


def test_trigger_mapping_needs_a_name(workdir: Path) -> None:
    assert problems_of(one_flow("      - intent: {confidence_threshold: 0.5}\n")) == [
        "flows.yml: flows.pay.nlu_trigger[0].intent.name: must be an intent name"
    ]


@pytest.mark.parametrize("item", ["      - 3\n", "      - intent: 3\n", "      - intent: null\n"])
def test_trigger_item_must_name_an_intent(workdir: Path, item: str) -> None:
    [problem] = problems_of(one_flow(item))
    assert problem.startswith("flows.yml: flows.pay.nlu_trigger[0]")


def test_flow_must_be_a_mapping(workdir: Path) -> None:
    assert problems_of("flows:\n  pay: [a, b]\n") == [
        "flows.yml: flows.pay: a flow must be a mapping (description, steps…)"
    ]


def test_flow_needs_description_and_steps(workdir: Path) -> None:
    assert problems_of(
        "flows:\n  pay: {nlu_trigger: [{intent: pay}]}\n"
        "  save:\n    description: s\n    steps: []\n"
    ) == [
        "flows.yml: flows.pay.description: is required",
        "flows.yml: flows.pay.steps: is required",
        "flows.yml: flows.save.steps: flow save does not have any steps",
    ]


def test_one_intent_triggering_two_flows_is_refused(workdir: Path) -> None:
    Path("flows").mkdir()
    Path("flows/a.yml").write_text(f"flows:\n  pay:\n{STEPS}    nlu_trigger: [{{intent: pay}}]\n")
    Path("flows/b.yml").write_text(
        f"flows:\n  send:\n{STEPS}    nlu_trigger: [{{intent: pay}}, {{intent: send}}]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_flows(Path("flows"))
    assert caught.value.problems == [
        "flows/b.yml: flows.send.nlu_trigger: intent pay already triggers flow pay (flows/a.yml); "
        "Rasa lets an intent trigger one flow only"
    ]


def test_one_flow_may_list_an_intent_twice(workdir: Path) -> None:
    text = one_flow("      - intent: pay\n      - intent: {name: pay, confidence_threshold: 0.9}\n")
    [flow] = flows_of(text)
    assert len(flow.triggers) == 2


def test_collects_in_branches_without_ask_before_filling(workdir: Path) -> None:
    text = (
        "flows:\n  pay:\n    description: d\n    steps:\n"
        "      - collect: amount\n"
        "      - collect: confirmed\n        ask_before_filling: true\n"
        "      - action: check\n        next:\n"
        "          - if: slots.amount > 10\n            then:\n              - collect: pin\n"
        "          - else:\n              - collect: note\n"
    )
    [flow] = flows_of(text)
    assert flow.collects == ("amount", "pin", "note")


def test_every_problem_is_reported(workdir: Path) -> None:
    text = (
        "flows:\n"
        f"  pay:\n{STEPS}    nlu_trigger:\n      - intent: {{}}\n"
        f"  save:\n{STEPS}    nlu_trigger:\n      - intent: save\n      - 3\n"
    )
    assert len(problems_of(text)) == 2


def test_duplicate_flow_id_across_files(workdir: Path) -> None:
    Path("flows").mkdir()
    Path("flows/a.yml").write_text(f"flows:\n  pay:\n{STEPS}")
    Path("flows/b.yml").write_text(f"flows:\n  pay:\n{STEPS}")
    with pytest.raises(ConfigError) as caught:
        load_flows(Path("flows"))
    assert caught.value.problems == [
        "flows/b.yml: flows.pay: flow id already defined in flows/a.yml"
    ]


def test_yaml_error_in_a_flows_directory_names_file_and_line(workdir: Path) -> None:
    Path("flows").mkdir()
    Path("flows/a.yml").write_text("flows:\n  pay:\n    steps: [\n")
    with pytest.raises(ConfigError) as caught:
        load_flows(Path("flows"))
    [line] = caught.value.problems
    assert line.startswith("flows/a.yml:4: invalid YAML")
