"""`${VAR}` references in endpoints.yml (and in an inline `llm:` of config.yml).

Rasa 3.11 expands `${VAR}` in a model only for a few keys (`EXPANDABLE_KEYS`), and credentials
(`SECRET_KEYS`) must be written as exactly `${VAR}` so that a committed file never holds one.
Here the same holds, plus: every value of the `kafka:` and `nlu:` sections is expanded (one file
per environment is the point of those sections), and a group's `router:` Redis keys are too,
because a Redis password belongs in the environment just like an API key.

Problems name the file, the key path and the variable, never a value.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from worker.config.errors import key_path, problem
from worker.llm.model_group import EXPANDABLE_KEYS, SECRET_KEYS

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
ROUTER_EXPANDABLE_KEYS = ("redis_url", "redis_host", "redis_port", "redis_password")


def is_variable_reference(value: object) -> bool:
    """Exactly `${NAME}`: the only form a secret may take in a file."""
    return isinstance(value, str) and _VARIABLE.fullmatch(value) is not None


def _expand_text(text: str, environ: Mapping[str, str]) -> tuple[str, list[str], bool]:
    """(expanded text, unset variables, malformed) for one string."""
    unset: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in environ:
            return environ[name]
        if name not in unset:
            unset.append(name)
        return match.group(0)

    malformed = "${" in _VARIABLE.sub("", text)
    return _VARIABLE.sub(substitute, text), unset, malformed


def _expand_one(
    value: Any, *, file: str, path: str, environ: Mapping[str, str], problems: list[str]
) -> Any:
    if isinstance(value, str):
        expanded, unset, malformed = _expand_text(value, environ)
        if malformed:
            problems.append(problem(file, path, "malformed ${...} reference, write it as ${NAME}"))
        problems.extend(
            problem(file, path, f"environment variable {name} is not set") for name in unset
        )
        return expanded
    if isinstance(value, list):
        return [
            _expand_one(item, file=file, path=f"{path}[{i}]", environ=environ, problems=problems)
            for i, item in enumerate(value)
        ]
    if isinstance(value, dict):
        return {
            key: _expand_one(
                item,
                file=file,
                path=key_path(path, [str(key)]),
                environ=environ,
                problems=problems,
            )
            for key, item in value.items()
        }
    return value


def expand_section(
    section: Mapping[str, Any], *, file: str, path: str, environ: Mapping[str, str]
) -> tuple[dict[str, Any], list[str]]:
    """Every string of a section (`kafka:`, `nlu:`), nested ones included, expanded."""
    problems: list[str] = []
    expanded = {
        key: _expand_one(
            value,
            file=file,
            path=key_path(path, [str(key)]),
            environ=environ,
            problems=problems,
        )
        for key, value in section.items()
    }
    return expanded, problems


def expand_keys(
    block: Mapping[str, Any],
    *,
    expandable: Collection[str],
    secrets: Collection[str] = (),
    file: str,
    path: str,
    environ: Mapping[str, str],
) -> tuple[dict[str, Any], list[str]]:
    """Expand `expandable` keys of one block; refuse literal `secrets` and `${}` elsewhere."""
    problems: list[str] = []
    expanded: dict[str, Any] = {}
    for key, value in block.items():
        where = key_path(path, [str(key)])
        if key in secrets and value is not None and not is_variable_reference(value):
            problems.append(
                problem(file, where, "must be written as ${VAR}, a literal secret is refused")
            )
            expanded[key] = value
        elif key in expandable:
            expanded[key] = _expand_one(
                value, file=file, path=where, environ=environ, problems=problems
            )
        else:
            if isinstance(value, str) and "${" in value:
                problems.append(
                    problem(
                        file,
                        where,
                        f"${{...}} is not expanded for this key (only for {', '.join(expandable)})",
                    )
                )
            expanded[key] = value
    return expanded, problems


def expand_model(
    model: Mapping[str, Any], *, file: str, path: str, environ: Mapping[str, str]
) -> tuple[dict[str, Any], list[str]]:
    """One deployment of a model group (or an inline `llm:`), with Rasa's expansion rules."""
    return expand_keys(
        model,
        expandable=EXPANDABLE_KEYS,
        secrets=SECRET_KEYS,
        file=file,
        path=path,
        environ=environ,
    )
