"""Problem lines: file, key path, message; never a value."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError, model_validator

from worker.config.errors import ConfigError, display_name, key_path, validation_problems
from worker.config.yaml_files import read_yaml


def test_config_error_str_is_one_problem_per_line() -> None:
    error = ConfigError(["a.yml: x: wrong", "b.yml: y: also wrong"])
    assert error.problems == ["a.yml: x: wrong", "b.yml: y: also wrong"]
    assert str(error) == "a.yml: x: wrong\nb.yml: y: also wrong"


def test_key_path_joins_keys_with_dots_and_indexes_with_brackets() -> None:
    assert key_path("model_groups[0] (id g)", ["models", 1, "api_key"]) == (
        "model_groups[0] (id g).models[1].api_key"
    )
    assert key_path("", ["kafka", "topics", "input"]) == "kafka.topics.input"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: SecretStr
    count: int = 0
    needed: str | None = None

    @model_validator(mode="after")
    def _needs(self) -> _Model:
        if self.count > 1 and self.needed is None:
            raise ValueError("count above 1 needs `needed`")
        return self


def _problems(values: dict[str, object]) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        _Model.model_validate(values)
    return validation_problems(caught.value, file="endpoints.yml", base="nlu")


def test_validation_problems_name_file_and_path_and_never_the_value() -> None:
    lines = _problems({"key": 12345, "count": "sk-very-secret", "colour": "sk-other-secret"})
    assert "endpoints.yml: nlu.key: Input should be a valid string" in lines
    assert any(line.startswith("endpoints.yml: nlu.count: Input should be") for line in lines)
    assert "endpoints.yml: nlu.colour: unknown key" in lines
    assert not any("secret" in line or "12345" in line for line in lines)


def test_validation_problems_reword_missing_keys() -> None:
    assert _problems({}) == ["endpoints.yml: nlu.key: required key is missing"]


def test_a_validator_naming_the_needed_key_points_at_it() -> None:
    assert _problems({"key": "k", "count": 2}) == [
        "endpoints.yml: nlu.needed: count above 1 needs needed"
    ]


def test_yaml_syntax_error_is_one_line_with_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("config.yml").write_text("pipeline:\n  - name: X\n   bad: [\n  api_key: sk-secret\n")
    problems: list[str] = []
    ok, _ = read_yaml(Path("config.yml"), problems)
    assert not ok
    assert len(problems) == 1
    assert problems[0].startswith("config.yml:3: invalid YAML: ")
    assert "sk-secret" not in problems[0]


def test_yaml_duplicate_key_is_refused_with_both_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("endpoints.yml").write_text("kafka:\n  url: a:1\nnlu:\n  url: http://x\nkafka: {}\n")
    problems: list[str] = []
    ok, _ = read_yaml(Path("endpoints.yml"), problems)
    assert not ok
    assert problems == [
        "endpoints.yml:5: invalid YAML: duplicate key 'kafka' (first defined on line 1)"
    ]


def test_yaml_merge_keys_may_override(tmp_path: Path) -> None:
    path = tmp_path / "e.yml"
    path.write_text("base: &b {a: 1, b: 2}\nchild:\n  <<: *b\n  b: 3\n")
    problems: list[str] = []
    ok, document = read_yaml(path, problems)
    assert ok and problems == []
    assert document["child"] == {"a": 1, "b": 3}


def test_yaml_dates_stay_text(tmp_path: Path) -> None:
    path = tmp_path / "e.yml"
    path.write_text("api_version: 2024-06-01\n")
    _, document = read_yaml(path, [])
    assert document == {"api_version": "2024-06-01"}
    assert not isinstance(document["api_version"], datetime.date)


def test_missing_file_is_a_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    problems: list[str] = []
    assert read_yaml(Path("nope.yml"), problems) == (False, None)
    assert problems == ["nope.yml: file not found"]


def test_display_name_is_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert display_name(tmp_path / "dev" / "endpoints.yml") == "dev/endpoints.yml"
    assert display_name(Path("/elsewhere/endpoints.yml")) == "/elsewhere/endpoints.yml"
    assert display_name(Path("endpoints.yml")) == "endpoints.yml"
