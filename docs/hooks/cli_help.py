"""MkDocs hook: the command-line page shows the ``sparseseg`` parser's own help, made at build time.

``<!-- sparseseg:usage -->`` becomes the usage line of every subcommand and
``<!-- sparseseg:help -->`` the full ``--help`` of ``sparseseg`` and of each subcommand, from
:func:`napari_sparseseg.cli.parser.build_parser` (the parser the command runs), so the page
never drifts from the code. Building the parser imports no torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

USAGE = "<!-- sparseseg:usage -->"
HELP = "<!-- sparseseg:help -->"
WIDTH = "80"  # argparse wraps to $COLUMNS; fixed, so the page does not depend on the terminal


def on_config(config):
    """Put this checkout first on ``sys.path``: the page documents its parser, not an installed one."""
    root = str(Path(config.config_file_path).resolve().parent)
    if sys.path[0] != root:
        sys.path.insert(0, root)
    return config


def _parsers():
    from napari_sparseseg.cli.parser import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        parser = build_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return parser, dict(sub.choices)
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def _formatted(text_of) -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        return text_of()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace the markers with the parser's usage and help."""
    if USAGE not in markdown and HELP not in markdown:
        return markdown
    parser, commands = _parsers()
    if USAGE in markdown:
        usages = []
        for p in commands.values():
            first, *rest = _formatted(p.format_usage).rstrip().splitlines()
            usages.append("\n".join([first.removeprefix("usage: ")] + [r[len("usage: "):] for r in rest]))
        markdown = markdown.replace(USAGE, "```text\n" + "\n".join(usages) + "\n```")
    if HELP in markdown:
        parts = ["### `sparseseg`\n\n```text\n" + _formatted(parser.format_help).rstrip() + "\n```"]
        for name, p in commands.items():
            parts.append(f"### `sparseseg {name}`\n\n```text\n" + _formatted(p.format_help).rstrip() + "\n```")
        markdown = markdown.replace(HELP, "\n\n".join(parts))
    return markdown
