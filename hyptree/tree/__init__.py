"""Taxonomies: the `Taxonomy` tree, base/novel splits, tree cuts and their files.

| module | holds |
|---|---|
| `taxonomy` | the immutable `Taxonomy` class |
| `checks` | the constructor's argument checks, `default_display_name` |
| `build` | ``/``-path lines and ``(parent, child)`` edges -> tree arrays (`Taxonomy.from_paths`, `from_edges`) |
| `splits` | `split_base_novel`, `SPLIT_MODES` |
| `cuts` | `random_cut`, `evaluation_cuts`, `cut_targets`, `validate_cut`, `level_cut`, `cut_ids`, `frontier_cut` |
| `cutfiles` | `save_cuts`, `load_cuts`, `load_protect_cuts` |
| `index` | `ProTeCtIndex` tables and `path_child_scores` (needs torch) |
| `pickles` | the stand-in unpickler for untrusted pickles |
| `io` | one reader module per taxonomy source (``from hyptree.tree.io import read_taxonomy``) |
| `cli` | ``python -m hyptree taxonomy show|stats|convert`` |

Only this package's bottom layer is imported here; ``index`` (torch) is loaded
when `ProTeCtIndex` or `path_child_scores` is first asked for, so reading and
converting taxonomies never imports torch.
"""

from hyptree.tree.build import ROOT_NAME
from hyptree.tree.checks import default_display_name
from hyptree.tree.cutfiles import load_cuts, load_protect_cuts, save_cuts
from hyptree.tree.cuts import cut_ids, cut_targets, evaluation_cuts, frontier_cut, level_cut, random_cut, validate_cut
from hyptree.tree.splits import SPLIT_MODES, split_base_novel
from hyptree.tree.taxonomy import Taxonomy

__all__ = [
    "Taxonomy",
    "ROOT_NAME",
    "default_display_name",
    "split_base_novel",
    "SPLIT_MODES",
    "random_cut",
    "evaluation_cuts",
    "cut_ids",
    "cut_targets",
    "validate_cut",
    "level_cut",
    "frontier_cut",
    "save_cuts",
    "load_cuts",
    "load_protect_cuts",
    "ProTeCtIndex",
    "path_child_scores",
]

_TORCH_NAMES = ("ProTeCtIndex", "path_child_scores")


def __getattr__(name):
    # torch-backed names load on first use (see the module docstring)
    if name in _TORCH_NAMES:
        from hyptree.tree import index

        return getattr(index, name)
    raise AttributeError(f"module 'hyptree.tree' has no attribute {name!r}")
