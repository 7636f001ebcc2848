"""The paper's published few-shot results, shipped as data (``paper_results.csv``).

``python -m hyptree results DIR --paper`` puts them beside every matching result row
(:func:`add_paper_columns`). Rows match by dataset, backbone, preset and shots:

* dataset: ``cifar100`` / ``sun397`` / ``imagenet`` / ``rare_species`` (any case, Dassl class
  names such as ``CIFAR100Hier`` too) -> the paper's CIFAR-100 / SUN / ImageNet / Rare Species;
* backbone: from the trainer (``MaPLe...`` -> MaPLe, ``PromptSRC...`` -> PromptSRC);
* preset: the ``Config`` column naming ``vanilla``, ``protect`` or ``hyptree`` (or a published
  ``vit_b16_*`` file, which is the hyptree preset) -> vanilla / +ProTeCt / +Ours.

The CSV keeps the README's value where the README and the project page disagree (1-shot
PromptSRC +ProTeCt ImageNet HCA: 20.36 in the README, 21.58 on the project page).
"""

from __future__ import annotations

import csv
import io
import re
from importlib import resources

__all__ = ["PAPER_METRICS", "paper_rows", "paper_key", "add_paper_columns"]

PAPER_METRICS = ("LA", "HCA", "MTA")
_DATASETS = {
    "cifar100": "CIFAR-100",
    "sun397": "SUN",
    "sun": "SUN",
    "imagenet": "ImageNet",
    "rarespecies": "Rare Species",
}
_METHODS = {"vanilla": "vanilla", "protect": "+ProTeCt", "hyptree": "+Ours", "vit_b16": "+Ours"}
NO_MATCH = (
    "no paper row matches (the paper reports CIFAR-100, SUN, ImageNet, Rare Species; MaPLe, PromptSRC; 1, 16 shots)"
)


def paper_rows() -> dict[tuple[str, str, int, str], dict[str, float]]:
    """``{(backbone, method, shots, dataset): {LA, HCA, MTA}}`` from the packaged CSV."""
    text = resources.files("hyptree.eval").joinpath("paper_results.csv").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    out = {}
    for row in csv.DictReader(io.StringIO("\n".join(lines))):
        key = (row["backbone"], row["method"], int(row["shots"]), row["dataset"])
        out[key] = {m: float(row[m]) for m in PAPER_METRICS}
    return out


def paper_key(dataset: str, trainer: str, config: str, shots) -> tuple[str, str, int, str] | None:
    """The paper's row key for one of our result rows, or ``None``."""
    d = re.sub(r"[^a-z0-9]", "", str(dataset).lower()).removesuffix("hier")
    backbone = "MaPLe" if str(trainer).lower().startswith("maple") else None
    backbone = "PromptSRC" if str(trainer).lower().startswith("promptsrc") else backbone
    method = next((v for k, v in _METHODS.items() if k in str(config).lower()), None)
    try:
        k = int(shots)
    except (TypeError, ValueError):
        return None
    if d not in _DATASETS or backbone is None or method is None:
        return None
    return backbone, method, k, _DATASETS[d]


def _mean(text: str) -> float | None:
    m = re.match(r"\s*(-?\d+(?:\.\d+)?)", str(text))
    return float(m.group(1)) if m else None


def add_paper_columns(tables) -> int:
    """Append ``paper`` and ``diff`` columns (LA / HCA / MTA, ours minus paper) to the rows of
    tables with ``Dataset``, ``Shots``, ``Trainer`` and ``Config`` columns. Returns the
    number of rows that matched a paper row."""
    rows = paper_rows()
    matched = 0
    for t in tables:
        if not {"Dataset", "Shots", "Trainer", "Config"} <= set(t.header):
            continue
        col = {name: i for i, name in enumerate(t.header)}
        shown = [m for m in PAPER_METRICS if m in col]
        t.header += ["paper " + "/".join(shown), "diff"]
        for r in t.rows:
            key = paper_key(r[col["Dataset"]], r[col["Trainer"]], r[col["Config"]], r[col["Shots"]])
            paper = rows.get(key) if key else None
            if paper is None:
                r += ["", ""]
                continue
            matched += 1
            ours = [_mean(r[col[m]]) for m in shown]
            r += [
                " / ".join(f"{paper[m]:.2f}" for m in shown),
                " / ".join("" if o is None else f"{o - paper[m]:+.2f}" for o, m in zip(ours, shown)),
            ]
    return matched
