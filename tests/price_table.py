"""Regenerate worker/llm/prices.json, the price table of cost-based-routing, from litellm.

    .venv/bin/pip install -e '.[bench]'          # litellm
    .venv/bin/python -m tests.price_table          # writes worker/llm/prices.json
    .venv/bin/python -m tests.price_table --from model_prices_and_context_window.json \\
        --source "litellm main, model_prices_and_context_window.json"

The installed litellm is not imported (importing it fetches its price map from the network):
the copy of `model_prices_and_context_window.json` its package ships is read as a file. Kept:
chat and text-completion models with both per-token prices, of the providers the gateway
speaks natively, under the keys worker.llm.prices looks up (see its docstring).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "worker" / "llm" / "prices.json"
LITELLM_FILE = "model_prices_and_context_window_backup.json"

_MODES = frozenset({"chat", "completion"})
_REGION = re.compile(r"[a-z]{2}(-gov)?-[a-z]+-\d")


def _keeps(key: str, provider: object) -> bool:
    """Whether worker.llm.prices would ever look `key` up (litellm_provider `provider`)."""
    if provider in ("openai", "text-completion-openai"):
        return "/" not in key
    if provider in ("azure", "azure_text"):
        return key.startswith("azure/") and key.count("/") == 1
    if provider in ("bedrock", "bedrock_converse"):
        parts = key.split("/")
        return len(parts) == 1 or (
            len(parts) == 3 and parts[0] == "bedrock" and bool(_REGION.fullmatch(parts[1]))
        )
    if provider == "ollama":
        return key.startswith("ollama/")
    return False


def _price(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    price = float(value)
    return price if math.isfinite(price) and price >= 0 else None


def extract(model_cost: Mapping[str, Any]) -> dict[str, list[float]]:
    """The entries of litellm's price map that the gateway's providers can use, sorted."""
    prices: dict[str, list[float]] = {}
    for key, entry in model_cost.items():
        if not isinstance(entry, dict) or entry.get("mode") not in _MODES:
            continue
        if not _keeps(key, entry.get("litellm_provider")):
            continue
        input_cost = _price(entry.get("input_cost_per_token"))
        output_cost = _price(entry.get("output_cost_per_token"))
        if input_cost is not None and output_cost is not None:
            prices[key] = [input_cost, output_cost]
    return dict(sorted(prices.items()))


def render(prices: Mapping[str, list[float]], *, source: str, extracted: str) -> str:
    document = {"source": source, "extracted": extracted, "prices": prices}
    # One entry a line, so a regenerated table diffs by model.
    lines = [
        "{",
        f'  "source": {json.dumps(source)},',
        f'  "extracted": {json.dumps(extracted)},',
        '  "prices": {',
    ]
    entries = [f"    {json.dumps(key)}: {json.dumps(pair)}" for key, pair in prices.items()]
    lines.append(",\n".join(entries))
    lines += ["  }", "}"]
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == document
    return text


def installed_litellm() -> tuple[Path, str]:
    spec = importlib.util.find_spec("litellm")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("litellm is not installed (pip install -e '.[bench]'), or use --from")
    path = Path(next(iter(spec.submodule_search_locations))) / LITELLM_FILE
    version = importlib.metadata.version("litellm")
    return path, f"litellm {version}, litellm/{LITELLM_FILE}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--from", dest="source_file", type=Path, help="a litellm price map")
    parser.add_argument("--source", help="what --from is (release and file), for the table")
    parser.add_argument("--out", type=Path, default=TARGET)
    args = parser.parse_args(argv)
    if args.source_file is not None:
        path, source = args.source_file, args.source or args.source_file.name
    else:
        path, source = installed_litellm()
    prices = extract(json.loads(path.read_text(encoding="utf-8")))
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    args.out.write_text(render(prices, source=source, extracted=today), encoding="utf-8")
    print(f"{args.out}: {len(prices)} prices from {source}")


if __name__ == "__main__":
    main()
