"""Rasa domains: read and merged as Rasa does (shared/core/domain.py Domain.from_directory,
merge_domain_dicts, _get_session_config; shared/utils/schemas/domain.yml; shared/core/
slot_mappings.py validation), refused one line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.config.domain import load_domain
from worker.config.errors import ConfigError
from worker.rasa.releases import RasaBehaviour, rasa_version
from worker.routing.domain import (
    DEFAULT_INTENTS,
    Domain,
    MappingCondition,
    SessionConfig,
    Slot,
    SlotMapping,
)

V3_11 = rasa_version("3.11.20").behaviour
V3_21 = rasa_version("3.21.0").behaviour


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def domain_of(text: str, rasa: RasaBehaviour = V3_11, warnings: list[str] | None = None) -> Domain:
    Path("domain.yml").write_text(text)
    domain = load_domain(Path("domain.yml"), rasa, warnings=warnings)
    assert domain is not None
    return domain


def problems_of(text: str, rasa: RasaBehaviour = V3_11) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        domain_of(text, rasa)
    return caught.value.problems


def test_intents_entities_slots_and_defaults() -> None:
    domain = domain_of(
        "intents:\n  - greet\n  - inform: {use_entities: [city]}\n"
        "entities:\n  - city\n  - person: {roles: [receiver]}\n"
        "slots:\n  city:\n    type: text\n    initial_value: Rome\n    mappings:\n"
        "      - type: from_entity\n        entity: city\n        intent: [inform]\n"
        "        conditions: [{active_loop: null}]\n"
        "  note: {type: list}\n"
    )
    assert domain.intents == DEFAULT_INTENTS | {"greet", "inform"}
    assert domain.entities == {"city", "person"}
    assert domain.slots == (
        Slot(
            "city",
            "text",
            (
                SlotMapping(
                    "from_entity",
                    entity="city",
                    intents=("inform",),
                    conditions=(MappingCondition(active_loop=None),),
                ),
            ),
            initial_value="Rome",
        ),
        Slot("note", "list", (SlotMapping("from_llm"),)),  # no mappings: from_llm
    )
    assert domain.slots[1].is_list
    # What /SetSlots may name: the domain's slots and Rasa's built-in ones.
    assert domain.slot_names == {"city", "note", "flow_hashes", "session_started_metadata"}
    assert domain.session == SessionConfig(60.0, True, True)  # Rasa's defaults


def test_a_directory_is_merged_first_definition_winning(workdir: Path) -> None:
    Path("domain").mkdir()
    Path("domain/a.yml").write_text(
        "intents: [greet]\nslots:\n  city: {type: text}\nforms:\n  f: {required_slots: [city]}\n"
    )
    Path("domain/b.yml").write_text(
        "intents: [greet, bye]\nslots:\n  city: {type: float}\n"
        "session_config: {session_expiration_time: 5, carry_over_slots_to_new_session: false}\n"
    )
    Path("domain/flows.yml").write_text("flows: {}\n")  # no domain key: not a domain file
    warnings: list[str] = []
    domain = load_domain(Path("domain"), V3_21, pattern_slots=("csat_score",), warnings=warnings)
    assert domain is not None
    assert {"greet", "bye"} <= domain.intents
    assert [(s.name, s.type) for s in domain.slots] == [("city", "text")]
    assert domain.session == SessionConfig(5.0, False, True)
    assert {"requested_slot", "mocked_datetime", "csat_score"} <= domain.slot_names
    assert warnings == [
        "domain/b.yml: intents.greet: defined in another domain file too; the first is used",
        "domain/b.yml: slots.city: defined in domain/a.yml too; that one is used",
    ]


def test_a_response_defined_twice_is_refused(workdir: Path) -> None:
    Path("domain").mkdir()
    Path("domain/a.yml").write_text("responses:\n  utter_hi: [{text: hi}]\n")
    Path("domain/b.yml").write_text("responses:\n  utter_hi: [{text: hello}]\n")
    with pytest.raises(ConfigError) as caught:
        load_domain(Path("domain"), V3_11)
    assert caught.value.problems == [
        "domain/b.yml: responses.utter_hi: defined in domain/a.yml too; "
        "Rasa refuses a response defined twice"
    ]


def test_start_session_after_expiry_is_read_from_3_16() -> None:
    text = (
        "session_config:\n  carry_over_slots_to_new_session: false\n"
        "  start_session_after_expiry: false\n"
    )
    assert domain_of(text, V3_21).session == SessionConfig(60.0, False, False)
    assert domain_of(text, V3_11).session == SessionConfig(60.0, False, True)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("intents: greet\n", "domain.yml: intents: must be a list of names"),
        ("intents:\n  - {a: {}, b: {}}\n", "domain.yml: intents[0]: must be `name` or `name: {…}`"),
        ("slots: [a]\n", "domain.yml: slots: must be a mapping"),
        ("slots:\n  a: {mappings: []}\n", "domain.yml: slots.a.type: required key is missing"),
        ("slots:\n  a: {type: number}\n",
         "domain.yml: slots.a.type: unknown slot type (any, bool, categorical, float, list, text, "
         "or a module path)"),
        ("slots:\n  a: {type: text, mappings: [{type: from_entity}]}\n",
         "domain.yml: slots.a.mappings[0].entity: a from_entity mapping needs entity"),
        ("slots:\n  a: {type: text, mappings: [{type: from_intent, intent: x}]}\n",
         "domain.yml: slots.a.mappings[0].value: a from_intent mapping needs value"),
        ("slots:\n  a:\n    type: text\n"
         "    mappings: [{type: from_text, conditions: [{loop: f}]}]\n",
         "domain.yml: slots.a.mappings[0].conditions[0]: unknown key(s) loop"),
        ("session_config: {session_expiration_time: -1}\n",
         "domain.yml: session_config.session_expiration_time: must be a number of minutes >= 0"),
        ("session_config: {carry_over_slots_to_new_session: maybe}\n",
         "domain.yml: session_config.carry_over_slots_to_new_session: must be true or false"),
        ("- a list\n", "domain.yml: must be a mapping of domain sections (intents, slots, …)"),
    ],
)  # fmt: skip
def test_refused(text: str, problem: str) -> None:
    assert problems_of(text) == [problem]


def test_every_problem_is_reported_and_no_value_echoed() -> None:
    problems = problems_of(
        "intents: 3\nslots:\n  a: {type: text, mappings: [{type: from_entity}]}\n"
        "  b: {type: sk-secret-value}\n"
    )
    assert len(problems) == 3
    assert "sk-secret-value" not in "\n".join(problems)


def test_missing_path(workdir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_domain(Path("nowhere.yml"), V3_11)
    assert caught.value.problems == ["nowhere.yml: domain file or directory not found"]
    assert load_domain(None, V3_11) is None
