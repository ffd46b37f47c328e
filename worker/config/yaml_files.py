"""Reading Rasa's YAML files the way their authors expect them to be read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, ScalarNode

from worker.config.env import PLAIN_REFERENCE, PlainReference
from worker.config.errors import display_name

_MERGE_TAG = "tag:yaml.org,2002:merge"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


class _RasaYamlLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and keeps dates as text.

    Rasa reads with ruamel, which refuses duplicate keys; PyYAML would silently keep the last
    one (two `kafka:` sections, two `id:` in one group). And `api_version: 2024-06-01` is
    meant as a string, not a `datetime.date`.
    """

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in first_seen:
                raise ConstructorError(
                    None,
                    None,
                    f"duplicate key {key_node.value!r} (first defined on line "
                    f"{first_seen[key_node.value]})",
                    key_node.start_mark,
                )
            first_seen[key_node.value] = line
        return super().construct_mapping(node, deep=deep)


_RasaYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _EnvReferenceLoader(_RasaYamlLoader):
    """Plain scalars holding `${…}` become PlainReference, as Rasa's loader tags them
    `!env_var` (shared/utils/yaml.py): only those are expanded at load (worker.config.env)."""


def _plain_reference(loader: yaml.SafeLoader, node: yaml.Node) -> PlainReference:
    assert isinstance(node, ScalarNode)
    return PlainReference(loader.construct_scalar(node))


_EnvReferenceLoader.add_implicit_resolver("!env_var", PLAIN_REFERENCE, None)
_EnvReferenceLoader.add_constructor("!env_var", _plain_reference)


def _yaml_problem(name: str, error: yaml.YAMLError) -> str:
    # Only PyYAML's generic wording is kept: its `str()` quotes the offending source line,
    # which may hold a secret.
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        what = "; ".join(part for part in (error.context, error.problem) if part)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        return f"{where}: invalid YAML: {what or 'cannot be parsed'}"
    return f"{name}: invalid YAML"


def read_yaml(path: Path, problems: list[str], *, env_references: bool = False) -> tuple[bool, Any]:
    """The document in `path`, or (False, None) with the reason appended to `problems`.
    With `env_references`, plain `${…}` scalars are PlainReference (endpoints.yml)."""
    name = display_name(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(f"{name}: file not found")
        return False, None
    except IsADirectoryError:
        problems.append(f"{name}: is a directory, expected a YAML file")
        return False, None
    except UnicodeDecodeError:
        problems.append(f"{name}: not UTF-8 text")
        return False, None
    except OSError as error:
        problems.append(f"{name}: cannot be read ({error.strerror or type(error).__name__})")
        return False, None
    try:
        loader = _EnvReferenceLoader if env_references else _RasaYamlLoader
        return True, yaml.load(text, Loader=loader)
    except yaml.YAMLError as error:
        problems.append(_yaml_problem(name, error))
        return False, None
