"""`${VAR}` references in endpoints.yml, as Rasa resolves them (rasa/shared/utils/yaml.py,
rasa/engine/validation.py, rasa/shared/utils/io.py; the same rules 3.11.10-3.21.0):

1. At load, every *plain* (unquoted) scalar matching `^(.*)\\$\\{(.*)\\}(.*)$` is expanded with
   `os.path.expandvars` (so `$NAME` beside it too; a name that is not set stays as written).
   A whitespace-separated word that starts with `$` and is still unexpanded is an error — also
   under a secret key. Under a secret key (SECRET_KEYS) the text is kept unexpanded. Quoted
   scalars are never expanded at load.
2. In a model, a value still starting with `${NAME}` (so: a quoted one) is refused unless its key
   is one of REFERENCE_KEYS; a secret must be written as `${NAME}` (Rasa 3.21.0: exactly that;
   before: starting with it).
3. When the client is built, every string of a model is expanded again (expandvars): secrets,
   quoted references of REFERENCE_KEYS, `${K}x`.

What Rasa leaves half-done is surely broken — a `${NAME}` still in a value after step 3 would be
sent as it is (`https://${NOPE}/v1`, an unset variable inside a longer word) — and is refused
here, naming the variable. `kafka:` and `nlu:` are this project's own sections: every string
there is expanded, quoted or not (`expand_section`).

Problems name the file, the key path and the variable, never a value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from worker.config.errors import key_path, problem

# Rasa's implicit YAML resolver for `!env_var` (shared/utils/yaml.py _add_env_var_resolver).
PLAIN_REFERENCE = re.compile(r"^(.*)\$\{(.*)\}(.*)$")
# os.path.expandvars (posixpath): `$name` or `${anything but a brace}`.
_EXPANDABLE = re.compile(r"\$(\w+|\{[^}]*\})", re.ASCII)
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LEFT_OVER = re.compile(r"\$\{([^}]*)\}")
_STARTS_WITH_REFERENCE = re.compile(r"\$\{(\w+)}")  # engine/validation.py, re.match

# shared/constants.py SENSITIVE_DATA (the keys a model group uses): kept unexpanded at load,
# must be written as `${VAR}`.
SECRET_KEYS = ("api_key", "aws_access_key_id", "aws_secret_access_key", "aws_session_token")
# engine/validation.py _validate_usage_of_environment_variables_in_model_group_config.
REFERENCE_KEYS = frozenset(
    {
        "deployment",
        "api_base",
        "api_key",
        "api_version",
        "aws_region_name",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
    }
)


class PlainReference(str):
    """A plain YAML scalar holding `${…}`: one that Rasa's loader expands (worker.config.
    yaml_files builds these; everything else reads them as the text they are)."""

    __slots__ = ()


def expandvars(text: str, environ: Mapping[str, str]) -> str:
    """os.path.expandvars with `environ` for os.environ: unknown names are left as written."""
    if "$" not in text:
        return text

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("{"):
            name = name[1:-1]
        return environ.get(name, match.group(0))

    return _EXPANDABLE.sub(substitute, text)


def is_variable_reference(value: object) -> bool:
    """Exactly `${NAME}`."""
    return isinstance(value, str) and _VARIABLE.fullmatch(value) is not None


def starts_with_reference(value: object) -> bool:
    """`${NAME}…`: what Rasa up to 3.20 accepts for a secret."""
    return isinstance(value, str) and _STARTS_WITH_REFERENCE.match(value) is not None


def left_over_references(text: str) -> list[str]:
    """The `${NAME}`s still in a fully expanded value (their variables are not set)."""
    return list(dict.fromkeys(_LEFT_OVER.findall(text)))


def _unset_words(raw: str, expanded: str) -> list[str]:
    # The constructor's own test: a word still starting with `$` that was in the raw text.
    return [word for word in expanded.split() if word.startswith("$") and word in raw]


def _names(words: list[str]) -> list[str]:
    names: list[str] = []
    for word in words:
        for match in _EXPANDABLE.finditer(word):
            name = match.group(1).strip("{}")
            if name not in names:
                names.append(name)
    return names or words


def unset_problems(file: str, path: str, names: list[str]) -> list[str]:
    return [problem(file, path, f"environment variable {name} is not set") for name in names]


Leaf = Callable[[str, str, str | None], str]


def _walk(value: Any, path: str, leaf: Leaf, key: str | None = None) -> Any:
    """`value` with every string replaced by `leaf(string, its key path, its key)`."""
    if isinstance(value, str):
        return leaf(value, path, key)
    if isinstance(value, dict):
        return {k: _walk(v, key_path(path, [str(k)]), leaf, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, f"{path}[{i}]", leaf) for i, v in enumerate(value)]
    return value


def expand_at_load(
    value: Any,
    *,
    file: str,
    path: str,
    environ: Mapping[str, str],
    problems: list[str],
    secret_keys: frozenset[str] = frozenset(SECRET_KEYS),
) -> Any:
    """Step 1 on a loaded section (nested mappings and lists included)."""

    def leaf(text: str, where: str, key: str | None) -> str:
        if not isinstance(text, PlainReference):
            return text
        raw = str(text)
        expanded = expandvars(raw, environ)
        problems.extend(unset_problems(file, where, _names(_unset_words(raw, expanded))))
        return raw if key in secret_keys else expanded

    return _walk(value, path, leaf)


def resolve(
    value: Any, *, file: str, path: str, environ: Mapping[str, str], problems: list[str]
) -> Any:
    """Step 3 (rasa/shared/utils/io.py resolve_environment_variables), refusing what is left."""

    def leaf(text: str, where: str, key: str | None) -> str:
        expanded = expandvars(str(text), environ)
        problems.extend(unset_problems(file, where, left_over_references(expanded)))
        return expanded

    return _walk(value, path, leaf)


def expand_section(
    section: Mapping[str, Any], *, file: str, path: str, environ: Mapping[str, str]
) -> tuple[dict[str, Any], list[str]]:
    """Every string of a section (`kafka:`, `nlu:`), nested ones included, expanded."""
    problems: list[str] = []

    def leaf(text: str, where: str, key: str | None) -> str:
        text = str(text)
        if "${" in _VARIABLE.sub("", text):
            problems.append(problem(file, where, "malformed ${...} reference, write it as ${NAME}"))
        unset = [name for name in dict.fromkeys(_VARIABLE.findall(text)) if name not in environ]
        problems.extend(unset_problems(file, where, unset))
        return _VARIABLE.sub(lambda m: environ.get(m.group(1), m.group(0)), text)

    expanded = {
        key: _walk(value, key_path(path, [str(key)]), leaf, str(key))
        for key, value in section.items()
    }
    return expanded, problems
