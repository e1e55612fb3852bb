"""`--help` of the recipe commands (`train`, `sft`): `--config` and the command's own options first, then TRL's.

TrlParser reads `--config` itself, so argparse never lists it, and its help prints every TrainingArguments field
(~1,500 lines) before the fields a recipe is about. Here the help is grouped: the recipe file, each of the command's
own dataclasses, then everything inherited, with a short usage line instead of argparse's one-per-option block.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

CONFIG_HELP = (
    "YAML recipe: a flat mapping of any option below (e.g. recipes/quickstart/*.yaml); --key value on the command "
    "line overrides it"
)


def own_fields(cls: type) -> list[str]:
    """The fields `cls` declares itself (not those of its dataclass bases)."""
    inherited = {f.name for base in cls.__mro__[1:] if hasattr(base, "__dataclass_fields__") for f in fields(base)}
    return [f.name for f in fields(cls) if f.name not in inherited]


def own_first(cls: type) -> list[str]:
    """Every field of `cls`, those it declares itself first."""
    return [*own_fields(cls), *(f.name for f in fields(cls))]


def format_recipe_help(parser: argparse.ArgumentParser, sections: list[tuple[str, list[str]]], epilog: str) -> str:
    """`--config`, then one titled section per (title, field names) in order, then every other option."""
    config = argparse.Action(
        option_strings=["--config"], dest="config", metavar="RECIPE.yaml", default=argparse.SUPPRESS, help=CONFIG_HELP
    )
    by_dest = {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}
    formatter = parser._get_formatter()
    formatter.add_usage(f"{parser.prog} --config RECIPE.yaml [--key value ...]", None, [], prefix="usage: ")
    formatter.add_text(parser.description)
    formatter.start_section("the recipe")
    formatter.add_arguments([config])
    formatter.end_section()
    shown: set[str] = set()
    for title, names in sections:
        actions = [by_dest[n] for n in dict.fromkeys(names) if n in by_dest and n not in shown]
        shown.update(a.dest for a in actions)
        formatter.start_section(title)
        formatter.add_arguments(actions)
        formatter.end_section()
    rest = [a for dest, a in by_dest.items() if dest not in shown]
    formatter.start_section("every other option (TRL and transformers; their documentation has the details)")
    formatter.add_arguments(rest)
    formatter.end_section()
    formatter.add_text(epilog)
    return formatter.format_help()
