"""Readers (and the writer) for every taxonomy source; each returns a `Taxonomy`.

| function | module | source |
|---|---|---|
| `read_paths_file` / `write_paths_file` | `paths` | the canonical text format (see `Taxonomy.from_paths`) |
| `read_folder_tree` | `folder` | a directory tree: folders are nodes, folders without subfolders are classes |
| `read_protect_tree` | `protect` | ProTeCt's ``tree.npy`` (a pickled object tree), read without their code |
| `read_protect_list` | `protect` | their ``gt_{split}.txt`` image lists |
| `read_cifar100_meta` | `cifar100` | CIFAR-100 python archive: ``meta`` + ``train`` pickles, 20 coarse -> 100 fine |
| `read_imagenet_meta`, `read_classnames_file` | `imagenet` | the devkit's ``meta.mat``; CoOp's ``classnames.txt`` |
| `read_rare_species` | `rare_species` | Rare Species class folders ``phylum_class_order_family_genus_species`` |
| `read_sun397_hierarchy` | `sun397` | SUN397's three-level hierarchy table (CSV/TSV) |
| `read_taxonomy` / `detect_format` | `detect` | any of the above, format chosen by name or detected |

Pickles go through the stand-in unpickler of `hyptree.tree.pickles`, never plain
``pickle.load``. Readers log (INFO) under the ``hyptree.tree.io`` logger.
"""

from hyptree.tree.io.cifar100 import read_cifar100_meta
from hyptree.tree.io.detect import FORMATS, detect_format, read_taxonomy
from hyptree.tree.io.folder import read_folder_tree
from hyptree.tree.io.imagenet import read_classnames_file, read_imagenet_meta
from hyptree.tree.io.paths import read_paths_file, write_paths_file
from hyptree.tree.io.protect import protect_text, read_protect_list, read_protect_tree
from hyptree.tree.io.rare_species import read_rare_species
from hyptree.tree.io.sun397 import read_sun397_hierarchy

__all__ = [
    "read_paths_file",
    "write_paths_file",
    "read_folder_tree",
    "read_protect_tree",
    "read_protect_list",
    "protect_text",
    "read_cifar100_meta",
    "read_imagenet_meta",
    "read_classnames_file",
    "read_rare_species",
    "read_sun397_hierarchy",
    "read_taxonomy",
    "detect_format",
    "FORMATS",
]
