"""The `sdpbx` command: `up`, `check-config`, `--version` (and later `user`, `apikey`).

Each subcommand is a `_add_<name>` function registering its parser and a handler returning the
exit status; adding one is a parser entry plus a handler. Exit statuses: 0 ok, 1 runtime failure
(e.g. a port in use), 2 bad usage or bad configuration (as argparse does).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from edge.cli_users import add_apikey_command, add_user_command
from edge.config import VERSION, ConfigError, load_config

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # also bad configuration: nothing will work until the file is fixed
EXIT_INTERRUPTED = 130

CONFIG_ENV = "SDPBX_CONFIG"

Handler = Callable[[argparse.Namespace], int]


def _config_errors(error: ConfigError) -> int:
    for line in str(error).splitlines():
        print(f"sdpbx: {line}", file=sys.stderr)
    return EXIT_USAGE


def _up(args: argparse.Namespace) -> int:
    path: Path | None = args.config
    try:
        config = load_config(path)
    except ConfigError as error:
        return _config_errors(error)

    # Imported here so that `check-config` and `--version` do not load the SIP stack.
    from edge.app import serve
    from edge.log import configure_logging

    configure_logging(config.log.level, config.log.format)
    try:
        serve(config)
    except OSError as error:  # a listener could not bind: the address is taken or not ours
        print(f"sdpbx: cannot start: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return EXIT_INTERRUPTED
    return EXIT_OK


def _add_up(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "up", help="run the edge (SIP + HTTP) until SIGINT/SIGTERM",
        description="Run the edge until SIGINT/SIGTERM. Without a config file every listener "
                    "binds 127.0.0.1 with the built-in defaults.",
    )
    default = os.environ.get(CONFIG_ENV)
    parser.add_argument(
        "--config", "-c", type=Path, metavar="FILE", default=Path(default) if default else None,
        help=f"TOML config file (default: ${CONFIG_ENV}, else the built-in defaults)",
    )
    parser.set_defaults(handler=_up)


def _check_config(args: argparse.Namespace) -> int:
    try:
        load_config(args.file)
    except ConfigError as error:
        return _config_errors(error)
    print(f"sdpbx: {args.file}: ok")
    return EXIT_OK


def _add_check_config(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "check-config", help="validate a config file and exit",
        description="Validate FILE; print every bad key and exit 2, or print 'ok' and exit 0.",
    )
    parser.add_argument("file", type=Path, metavar="FILE")
    parser.set_defaults(handler=_check_config)


_SUBCOMMANDS = (_add_up, _add_check_config, add_user_command, add_apikey_command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdpbx", description="sdpbx: a software-defined PBX (SIP/RTP edge + control plane).",
    )
    parser.add_argument("--version", action="version", version=f"sdpbx {VERSION}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in _SUBCOMMANDS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: `sys.argv[1:]`) and return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, usage errors: argparse already printed
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    handler: Handler = args.handler
    return handler(args)
