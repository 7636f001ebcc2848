"""HypTree: Alignment across Trees for CoOp-family prompt learning.

Framework-agnostic: nothing here imports Dassl.
"""

from importlib.metadata import version as _version

# pyproject.toml is the single source; the package is always installed (``pip install -e .``)
__version__ = _version("hyptree")
