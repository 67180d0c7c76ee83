"""
The project's command line, ``attention-unets <command> [options]`` (a console script of the package).

Each command is a module of this package with ``add_arguments(parser)`` and ``run(args) -> int``. Importing a
command module stays cheap (torch and MONAI load inside ``run``), so ``--help`` and option errors answer at once.
Options are checked before any work: an unknown option gets one line naming the closest valid one, and an
:class:`~custom_networks.errors.InputError` raised anywhere below (a bad file, a missing model) ends the command
with its one-line message and exit status 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from collections.abc import Sequence

from custom_networks.errors import InputError, closest, find_input_error

__all__ = ["COMMANDS", "flag_message", "main", "parse_assignments"]

# command -> (module, one-line help); later commands (PACS batch jobs, ablation studies) add themselves here
COMMANDS = {
    "infer": ("custom_networks.cli.infer", "segment a file or folder with a bundle (NIfTI, DICOM, images)"),
    "pacs-batch": ("custom_networks.cli.pacs_batch", "segment matching series of a PACS, store DICOM SEG and SR back"),
    "pacs-listen": ("custom_networks.cli.pacs_listen", "an AI node the PACS pushes to: segment series as they arrive"),
    "ablation": ("custom_networks.cli.ablation", "seeded ablation study of a paper's claims through its bundle"),
}
PROG = "attention-unets"
EXIT_USAGE = 2
# library parameters whose option is not simply --<parameter> (see flag_message)
_OPTION_OF_PARAMETER = {"overrides": "--set"}


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors as one line (``<prog>: error: ...``) and no usage dump."""

    def error(self, message: str):
        raise InputError(f"{self.prog}: {message} (see --help)")


def parse_assignments(pairs: Sequence[str], option: str = "--set") -> dict[str, object]:
    """``ID=VALUE`` pairs as ``{id: value}``, each value read as JSON when it parses, else kept as text."""
    values: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise InputError(f"{option} {pair}: expected ID=VALUE")
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError:
            values[key] = text
    return values


def flag_message(error: InputError) -> str:
    """``error``'s message as the command line says it: the library's parameter names as options, the one the
    message starts with (``bundle x: ...`` -> ``--bundle x: ...``) and ``name=`` mentions (``demo=True`` ->
    ``--demo``, ``weights=FILE`` -> ``--weights FILE``)."""
    message = str(error)
    parameter = getattr(error, "parameter", None)
    if parameter and message.startswith(parameter):
        message = _flag(parameter) + message[len(parameter):]
    message = re.sub(r"\b([a-z_]+)=True\b", lambda match: _flag(match[1]), message)
    return re.sub(r"\b([a-z_]+)=(?=\S)", lambda match: _flag(match[1]) + " ", message)


def _flag(parameter: str) -> str:
    return _OPTION_OF_PARAMETER.get(parameter, "--" + parameter.replace("_", "-"))


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    return [option for action in parser._actions for option in action.option_strings]


def _check_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Refuse the first ``--option`` the command does not have, naming the closest valid one, before argparse
    would complain about something else (a missing required option) instead."""
    options = _option_strings(parser)
    for word in (item.split("=", 1)[0] for item in argv if item.startswith("--")):
        if word not in options:
            hint = closest(word, options)
            suggestion = f"; did you mean {hint}?" if hint else f"; valid options: {', '.join(sorted(options))}"
            raise InputError(f"{parser.prog}: unknown option {word}{suggestion}")


def build_parser() -> tuple[OneLineParser, dict[str, OneLineParser]]:
    parser = OneLineParser(prog=PROG, description=__doc__.strip().splitlines()[0], allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)
    parsers = {}
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=help_text, description=module.__doc__, allow_abbrev=False,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
        parsers[name] = sub
    return parser, parsers


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (0 done, 1 some cases failed, 2 bad options or input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser, parsers = build_parser()
        if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
            hint = closest(argv[0], list(COMMANDS))
            raise InputError(f"{PROG}: unknown command {argv[0]!r}" + (f"; did you mean {hint}?" if hint else ""))
        if argv and argv[0] in parsers:
            _check_options(parsers[argv[0]], argv[1:])
        args = parser.parse_args(argv)
        return args.run(args)
    except Exception as error:
        found = find_input_error(error)
        if found is None:
            raise
        print(f"error: {flag_message(found)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
