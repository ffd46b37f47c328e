"""Configuration problems as one readable line each: `file: key.path: what is wrong`.

Values are never echoed: any of them may be a secret (an API key, a SASL password), and a
configuration error ends up in logs, CI output and bug reports.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pydantic import ValidationError


class ConfigError(Exception):
    """Every problem found in the configuration files, one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: list[str] = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


def display_name(path: Path) -> str:
    """How a file is named in problems: as the user wrote it, relative to the cwd if inside it."""
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def looked_in(directory: Path) -> str:
    """Where a relative file name was searched: the cwd, then the directory of the YAML file."""
    if directory.resolve() == Path.cwd().resolve():
        return "looked in the current directory"
    return f"looked in the current directory and in {display_name(directory)}"


def key_path(base: str, loc: Iterable[str | int]) -> str:
    """`model_groups[0]` + ("models", 1, "api_key") -> `model_groups[0].models[1].api_key`."""
    path = base
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif path:
            path += f".{part}"
        else:
            path = part
    return path


def problem(file: str, path: str, message: str) -> str:
    return f"{file}: {path}: {message}" if path else f"{file}: {message}"


# pydantic's wording, reworded where a config author would not recognise it.
_REWORDED = {
    "Field required": "required key is missing",
    "Extra inputs are not permitted": "unknown key",
}
_PREFIXES = ("Value error, ", "Assertion failed, ")
# Validators of this project say "needs `key`": such an error belongs to that key, not to the
# block that holds it (`group of 2 models needs a `router` block` -> `....router: ...`).
_NEEDED_KEY = re.compile(r"needs (?:an? )?`(\w+)`")


def _message_and_key(message: str) -> tuple[str, str | None]:
    for prefix in _PREFIXES:
        message = message.removeprefix(prefix)
    message = _REWORDED.get(message, message)
    needed = _NEEDED_KEY.search(message)
    return message.replace("`", ""), needed.group(1) if needed else None


def validation_problems(
    error: ValidationError,
    *,
    file: str,
    base: str = "",
    key_labels: Mapping[str, str] | None = None,
) -> list[str]:
    """One line per pydantic error: file, the key path under `base`, and pydantic's message.

    `key_labels` renames a top-level key in the path, e.g. to say a value came from the
    environment rather than from the file.
    """
    lines: list[str] = []
    for detail in error.errors(include_input=False, include_url=False, include_context=False):
        loc = [part for part in detail["loc"]]
        message, needed = _message_and_key(detail["msg"])
        if needed is not None and (not loc or loc[-1] != needed):
            loc.append(needed)
        if key_labels and loc and isinstance(loc[0], str) and loc[0] in key_labels:
            loc[0] = key_labels[loc[0]]
        line = problem(file, key_path(base, loc), message)
        if line not in lines:
            lines.append(line)
    return lines
