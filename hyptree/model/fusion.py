"""Text-guided selection over image layer tokens (DESIGN 4.3).

For every text node feature ``t_n`` and every image's layer tokens ``h_1..h_M`` (from
:class:`hyptree.model.towers.VisionTower`), single-head attention with learnable query/key
projections and identity value/output projections::

    v_n = sum_j softmax_j( q(t_n) . k(h_j) / sqrt(D) ) h_j

so ``v_n`` is a convex combination of the layer tokens, picked by the node. Because ``v_n``
depends only on the image and on node ``n``, one image pass and one text pass over all nodes
give every score the metrics need.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TextGuidedSelection", "QK_INITS"]

#: Initialisations of the query/key projections: ``identity`` (ours) or ``xavier`` (the
#: official code: PyTorch's default for a packed multi-head in_proj, zero biases).
QK_INITS = ("identity", "xavier")


class TextGuidedSelection(nn.Module):
    """Convex, text-conditioned mixing of layer tokens.

    Parameters: ``q`` and ``k``, each ``Linear(dim, dim)``, initialised to the identity with
    zero bias: the initial selection is then ``softmax(t . h_j / sqrt(D))``, i.e. it already
    prefers the layer tokens that agree with the node's text in CLIP's joint space, and
    training starts from that instead of from arbitrary random projections.

    The value and output projections are the identity and frozen by default; no parameters
    are created for them (``v_proj`` is ``None``: equivalent to frozen identity ``Linear``
    layers, with nothing for an optimiser or a weight decay to touch).

    Args:
        dim: feature width ``D``.
        learn_value: a trainable value projection ``v_proj = Linear(D, D)`` (identity weight,
            zero bias at init), applied to the layer tokens before mixing, as in the official
            code (which freezes only the output projection). ``v_n`` is then a convex
            combination of the projected tokens.
        qk_init: ``identity`` (above) or ``xavier``: the official initialisation, i.e. q and k
            are the first two ``D``-row blocks of a ``(3D, D)`` Xavier-uniform matrix (bound
            ``sqrt(6 / 4D)``), biases zero; drawn from torch's global generator.
    """

    def __init__(self, dim, learn_value=False, qk_init="identity"):
        super().__init__()
        if qk_init not in QK_INITS:
            raise ValueError(f"qk_init {qk_init!r}; expected one of {', '.join(QK_INITS)}")
        self.dim = dim
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim) if learn_value else None
        with torch.no_grad():
            packed = nn.init.xavier_uniform_(torch.empty(3 * dim, dim)) if qk_init == "xavier" else None
            for i, layer in enumerate((self.q, self.k)):
                layer.weight.copy_(torch.eye(dim) if packed is None else packed[i * dim : (i + 1) * dim])
                layer.bias.zero_()
            if self.v_proj is not None:
                self.v_proj.weight.copy_(torch.eye(dim))
                self.v_proj.bias.zero_()

    def attention(self, text, layer_tokens):
        """Selection weights ``(B, N, M)`` (float32 or float64), rows summing to 1.

        Args:
            text: ``(N, D)`` text node features.
            layer_tokens: ``(B, M, D)`` image layer tokens.
        """
        if (
            text.dim() != 2
            or layer_tokens.dim() != 3
            or text.shape[-1] != self.dim
            or layer_tokens.shape[-1] != self.dim
        ):
            raise ValueError(
                f"expected text (N, {self.dim}) and layer_tokens (B, M, {self.dim}), "
                f"got {tuple(text.shape)} and {tuple(layer_tokens.shape)}"
            )
        dtype = torch.promote_types(torch.promote_types(text.dtype, layer_tokens.dtype), self.q.weight.dtype)
        query = F.linear(text.to(dtype), self.q.weight.to(dtype), self.q.bias.to(dtype))
        key = F.linear(layer_tokens.to(dtype), self.k.weight.to(dtype), self.k.bias.to(dtype))
        # (B, M, D) @ (D, N) -> (B, M, N): memory O(B*M*N), no (B, N, M, D) intermediate
        scores = (key @ query.t()).transpose(1, 2) / math.sqrt(self.dim)
        # half precision softmax loses the small weights: do it in float32 at least
        return torch.softmax(scores.to(torch.promote_types(scores.dtype, torch.float32)), dim=-1)

    def forward(self, text, layer_tokens, return_weights=False):
        """Selected image features ``(B, N, D)`` in ``layer_tokens``' dtype.

        Args:
            text: ``(N, D)`` text node features (queries).
            layer_tokens: ``(B, M, D)`` layer tokens (keys and values).
            return_weights: also return the ``(B, N, M)`` weights.
        """
        weights = self.attention(text, layer_tokens)
        values = layer_tokens if self.v_proj is None else self._values(layer_tokens, weights.dtype)
        mixed = (weights @ values.to(weights.dtype)).to(layer_tokens.dtype)  # (B, N, D)
        return (mixed, weights) if return_weights else mixed

    def _values(self, layer_tokens, dtype):
        """``v_proj`` of the layer tokens, computed in ``dtype`` (at least the tokens')."""
        dtype = torch.promote_types(torch.promote_types(dtype, layer_tokens.dtype), self.v_proj.weight.dtype)
        return F.linear(layer_tokens.to(dtype), self.v_proj.weight.to(dtype), self.v_proj.bias.to(dtype))
