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
from worker.ops.server import (
    DEFAULT_HTTP_HOST,
    DEFAULT_HTTP_PORT,
    HTTP_PORT_VARIABLE,
    HttpPortInUse,
    HttpSettings,
)
from worker.rasa.releases import (
    DEFAULT_VERSION,
    VERSION_VARIABLE,
    RasaVersion,
    UnknownRasaVersion,
    rasa_version,
)


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
        parents=[_logging_options(defaults=True)],
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_command = functools.partial(commands.add_parser, parents=[_logging_options(False)])

    run = add_command("run", help="join the consumer group and route messages")
    run.add_argument("--config", required=True, help="Rasa config.yml")
    run.add_argument("--endpoints", required=True, help="endpoints.yml of this environment")
    _assistant_options(run)
    run.add_argument(
        "--http-port",
        default=os.environ.get(HTTP_PORT_VARIABLE) or str(DEFAULT_HTTP_PORT),
        help=f"port of /metrics, /healthz and /readyz (env {HTTP_PORT_VARIABLE}; default "
        f"{DEFAULT_HTTP_PORT}; 0: no HTTP server)",
    )
    run.add_argument(
        "--http-host",
        default=DEFAULT_HTTP_HOST,
        help=f"address to serve them on (default {DEFAULT_HTTP_HOST}: every interface)",
    )

    validate = add_command("validate", help="check config.yml against one or more endpoints files")
    validate.add_argument("--config", required=True)
    validate.add_argument("--endpoints", required=True, action="append")
    _assistant_options(validate)

    demo = add_command("demo", help="the whole pipeline on an embedded broker")
    demo.add_argument(
        "--router", choices=["intent", "llm", "both"], default="both", help="which router to show"
    )
    demo.add_argument(
        "--rasa-version",
        default=os.environ.get(VERSION_VARIABLE) or DEFAULT_VERSION,
        help="Rasa Pro release to reproduce",
    )
    demo.add_argument(
        "--http-port",
        default=None,
        help="port of its /metrics, /healthz and /readyz on 127.0.0.1 (default: a free one; "
        "0: none)",
    )
    return parser


def http_port(text: str, source: str) -> int | None:
    """The port a value names (0-65535), else None after printing what is wrong."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        print(f"{source} must be a port number from 0 to 65535, not {text!r}", file=sys.stderr)
        return None
    return port


def _port_source(argv: list[str] | None) -> str:
    given = sys.argv[1:] if argv is None else argv
    if any(a == "--http-port" or a.startswith("--http-port=") for a in given):
        return "--http-port"
    return HTTP_PORT_VARIABLE


def _rasa(args: argparse.Namespace) -> RasaVersion | None:
    try:
        return rasa_version(args.rasa_version)
    except UnknownRasaVersion as error:
        print(f"--rasa-version: {error}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.log_format not in LOG_FORMATS:  # from the environment, which argparse leaves be
        print(f"{LOG_FORMAT_VARIABLE} must be one of {', '.join(LOG_FORMATS)}", file=sys.stderr)
        return 2
    configure_logging(args.log_level, args.log_format)
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

        demo_port: int | None = 0  # a free port
        if args.http_port is not None:
            chosen = http_port(args.http_port, "--http-port")
            if chosen is None:
                return 2
            demo_port = chosen or None  # 0: none
        return eventloop.run(run_demo(args.router, rasa=rasa, http_port=demo_port))
    port = http_port(args.http_port, _port_source(argv))
    if port is None:
        return 2
    http = HttpSettings(args.http_host, port) if port else None
    from worker.service import serve

    def refuse(line: str) -> None:
        # In JSON every line of the process is an object: a log pipeline reads these too.
        if args.log_format == "json":
            logging.getLogger("worker.cli").error(line)
        else:
            print(line, file=sys.stderr)

    try:
        eventloop.run(
            serve(
                args.config,
                args.endpoints,
                args.flows,
                os.environ,
                domain=args.domain,
                rasa=rasa,
                http=http,
            )
        )
    except ConfigError as error:
        for problem in error.problems:
            refuse(problem)
        refuse("refusing to start: the configuration is invalid")
        return 1
    except TopicLayoutError as error:
        refuse(f"refusing to start: {error}")
        return 1
    except HttpPortInUse as error:
        refuse(f"refusing to start: --http-port {port}: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
