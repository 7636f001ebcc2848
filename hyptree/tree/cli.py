"""``python -m hyptree taxonomy show|stats|convert SOURCE``: look at or convert a taxonomy source."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from hyptree.tree.io.detect import FORMATS, read_taxonomy
from hyptree.utils.files import atomic_write_text

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hyptree taxonomy show|stats|convert SOURCE [--format F] [-o OUT]``."""
    ap = argparse.ArgumentParser(
        prog="python -m hyptree taxonomy",
        description="Show, summarise or convert a taxonomy to the canonical path format.",
    )
    ap.add_argument("command", choices=("show", "stats", "convert"))
    ap.add_argument("source", help="taxonomy file or folder")
    ap.add_argument("--format", default="auto", choices=FORMATS)
    ap.add_argument("-o", "--output", help="output file (convert/stats; default stdout)")
    ap.add_argument("--max-lines", type=int, default=None, help="show: stop after this many lines")
    args = ap.parse_args(argv)
    try:
        tax = read_taxonomy(args.source, args.format)
    except (ValueError, KeyError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.command == "show":
        text = tax.format_tree(args.max_lines)
    elif args.command == "stats":
        text = json.dumps(tax.stats(), indent=1)
    else:
        text = "\n".join(tax.to_paths())
    if args.output:
        atomic_write_text(args.output, text + "\n")
    else:
        print(text)
    return 0
