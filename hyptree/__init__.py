"""HypTree: Alignment across Trees for CoOp-family prompt learning.

Framework-agnostic: nothing here imports Dassl.
"""

__version__ = "0.1.0"
