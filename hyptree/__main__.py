"""``python -m hyptree COMMAND ...`` (or the ``hyptree`` console script): one entry point.

Each command lives with the code it drives and is imported only when called, so
``python -m hyptree taxonomy stats tree.txt`` never loads torch's model code.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module, function, one-line help)
COMMANDS = {
    "taxonomy": ("hyptree.tree.cli", "main", "show / stats / convert a taxonomy source"),
    "results": ("hyptree.eval.results", "main", "collect run folders into mean +- std tables"),
    "clip": ("hyptree.model.loading", "main", "make-tiny: write a random tiny CLIP"),
    "toy": ("hyptree.run.toyclip", "main", "pretrain-clip: a tiny CLIP pretrained on ToyWorld captions"),
    "protocols": ("hyptree.run.protocols", "main", "helpers of scripts/hyptree/*.sh"),
    "maple": ("hyptree.run.maple_patch", "main", "install HypTree into a MaPLe / PromptSRC checkout"),
    "predict": ("hyptree.run.predict", "main", "a root-to-leaf path per image from a trained run"),
    "sweep": ("hyptree.run.sweep", "main", "run a protocol grid: serially, over local GPUs, or on SLURM"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items())
    return f"usage: python -m hyptree COMMAND [ARGS ...]\n\ncommands:\n{rows}\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(), end="")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"hyptree: unknown command {name!r}; available: {', '.join(COMMANDS)}\n", file=sys.stderr)
        print(_usage(), end="", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    return int(getattr(importlib.import_module(module), func)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
