"""`coexistence-router run | validate | demo`."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from pathlib import Path

from worker import eventloop
from worker.config.app_config import validate_files
from worker.config.errors import ConfigError
from worker.kafka.topics import TopicLayoutError
from worker.logs import DEFAULT_LOG_FORMAT, LOG_FORMAT_VARIABLE, LOG_FORMATS, configure_logging


def _logging_options(defaults: bool) -> argparse.ArgumentParser:
    """--log-level and --log-format, before or after the command; given after it, they win."""
    options = argparse.ArgumentParser(add_help=False)
    unset = argparse.SUPPRESS
    options.add_argument(
        "--log-level", default=os.environ.get("LOG_LEVEL", "INFO") if defaults else unset
    )
    options.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=(os.environ.get(LOG_FORMAT_VARIABLE) or DEFAULT_LOG_FORMAT) if defaults else unset,
        help=f"text (default) or json: one object a line (env {LOG_FORMAT_VARIABLE})",
    )
    return options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coexistence-router",
        description="Rasa Pro coexistence routing as a Kafka consumer-group worker.",
        parents=[_logging_options(defaults=True)],
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_command = functools.partial(commands.add_parser, parents=[_logging_options(False)])

    run = add_command("run", help="join the consumer group and route messages")
    run.add_argument("--config", required=True, help="Rasa config.yml")
    run.add_argument("--endpoints", required=True, help="endpoints.yml of this environment")
    run.add_argument("--flows", help="flows YAML file or directory (nlu_trigger is read)")

    validate = add_command("validate", help="check config.yml against one or more endpoints files")
    validate.add_argument("--config", required=True)
    validate.add_argument("--endpoints", required=True, action="append")
    validate.add_argument("--flows")

    demo = add_command("demo", help="the whole pipeline on an embedded broker")
    demo.add_argument(
        "--router", choices=["intent", "llm", "both"], default="both", help="which router to show"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.log_format not in LOG_FORMATS:  # from the environment, which argparse leaves be
        print(f"{LOG_FORMAT_VARIABLE} must be one of {', '.join(LOG_FORMATS)}", file=sys.stderr)
        return 2
    configure_logging(args.log_level, args.log_format)
    if args.command == "validate":
        warnings: list[str] = []
        problems = validate_files(
            Path(args.config),
            [Path(p) for p in args.endpoints],
            Path(args.flows) if args.flows else None,
            os.environ,
            warnings=warnings,
        )
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print(f"{len(problems)} problem(s) found", file=sys.stderr)
            return 1
        print(f"valid: {args.config} with {', '.join(args.endpoints)}")
        return 0
    if args.command == "demo":
        from worker.demo import run_demo

        return eventloop.run(run_demo(args.router))
    from worker.service import serve

    def refuse(line: str) -> None:
        # In JSON every line of the process is an object: a log pipeline reads these too.
        if args.log_format == "json":
            logging.getLogger("worker.cli").error(line)
        else:
            print(line, file=sys.stderr)

    try:
        eventloop.run(serve(args.config, args.endpoints, args.flows, os.environ))
    except ConfigError as error:
        for problem in error.problems:
            refuse(problem)
        refuse("refusing to start: the configuration is invalid")
        return 1
    except TopicLayoutError as error:
        refuse(f"refusing to start: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
