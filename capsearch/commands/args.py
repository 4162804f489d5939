"""What the command lines of several commands share: the settings of the instance that
`--data-dir` names, and a command made of actions (`capsearch db upgrade|check`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping

from shared.config import Settings, get_settings

Handler = Callable[[argparse.Namespace], int]


def settings_for(args: argparse.Namespace) -> Settings:
    """The settings, for `--data-dir` when given (with what a stack recorded there)."""
    if getattr(args, "data_dir", None):
        return Settings(data_dir=args.data_dir.resolve())
    return get_settings()


def add_actions(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: str,
                help: str, actions: Mapping[str, tuple[str, Handler]]
                ) -> dict[str, argparse.ArgumentParser]:
    """`capsearch COMMAND ACTION`: one parser per action (its help, its handler), in order."""
    parsers = sub.add_parser(command, help=help).add_subparsers(
        dest="action", required=True, metavar="ACTION")
    out: dict[str, argparse.ArgumentParser] = {}
    for action, (action_help, handler) in actions.items():
        out[action] = parsers.add_parser(action, help=action_help)
        out[action].set_defaults(func=handler)
    return out
