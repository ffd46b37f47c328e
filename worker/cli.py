"""`coexistence-router run | validate | demo`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from worker import eventloop
from worker.config.app_config import validate_files
from worker.config.errors import ConfigError
from worker.kafka.topics import TopicLayoutError
from worker.rasa.releases import (
    DEFAULT_VERSION,
    VERSION_VARIABLE,
    RasaVersion,
    UnknownRasaVersion,
    rasa_version,
)


def _assistant_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--flows", help="flows YAML file or directory (nlu_trigger, collect)")
    command.add_argument("--domain", help="domain YAML file or directory (merged as Rasa does)")
    command.add_argument(
        "--rasa-version",
        default=os.environ.get(VERSION_VARIABLE) or DEFAULT_VERSION,
        help=f"Rasa Pro release to reproduce, X.Y or X.Y.Z (env {VERSION_VARIABLE}; "
        f"default {DEFAULT_VERSION}: its newest release)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coexistence-router",
        description="Rasa Pro coexistence routing as a Kafka consumer-group worker.",
    )
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="join the consumer group and route messages")
    run.add_argument("--config", required=True, help="Rasa config.yml")
    run.add_argument("--endpoints", required=True, help="endpoints.yml of this environment")
    _assistant_options(run)

    validate = commands.add_parser(
        "validate", help="check config.yml against one or more endpoints files"
    )
    validate.add_argument("--config", required=True)
    validate.add_argument("--endpoints", required=True, action="append")
    _assistant_options(validate)

    demo = commands.add_parser("demo", help="the whole pipeline on an embedded broker")
    demo.add_argument(
        "--router", choices=["intent", "llm", "both"], default="both", help="which router to show"
    )
    demo.add_argument(
        "--rasa-version",
        default=os.environ.get(VERSION_VARIABLE) or DEFAULT_VERSION,
        help="Rasa Pro release to reproduce",
    )
    return parser


def _rasa(args: argparse.Namespace) -> RasaVersion | None:
    try:
        return rasa_version(args.rasa_version)
    except UnknownRasaVersion as error:
        print(f"--rasa-version: {error}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.root.level))
    rasa = _rasa(args)
    if rasa is None:
        return 1
    if args.command == "validate":
        warnings: list[str] = []
        problems = validate_files(
            Path(args.config),
            [Path(p) for p in args.endpoints],
            Path(args.flows) if args.flows else None,
            os.environ,
            domain=Path(args.domain) if args.domain else None,
            rasa=rasa,
            warnings=warnings,
        )
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print(f"{len(problems)} problem(s) found", file=sys.stderr)
            return 1
        print(f"valid for {rasa}: {args.config} with {', '.join(args.endpoints)}")
        return 0
    if args.command == "demo":
        from worker.demo import run_demo

        return eventloop.run(run_demo(args.router, rasa=rasa))
    from worker.service import serve

    try:
        eventloop.run(
            serve(
                args.config,
                args.endpoints,
                args.flows,
                os.environ,
                domain=args.domain,
                rasa=rasa,
            )
        )
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        print("refusing to start: the configuration is invalid", file=sys.stderr)
        return 1
    except TopicLayoutError as error:
        print(f"refusing to start: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
