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

    def values(self, layer_tokens, dtype=None):
        """The mixed vectors ``h'_j``: ``layer_tokens (B, M, D)`` through the value projection.

        The value projection is ``self.v_proj`` (an ``nn.Linear``) when the module has one,
        otherwise the frozen identity. It is affine, so it commutes with the convex mix
        (``sum_j a_nj = 1``): ``V(sum_j a_nj h_j) = sum_j a_nj V(h_j)``; applying it to the
        ``M`` tokens once is exact and cheaper than to every node's mix.
        """
        dtype = dtype or layer_tokens.dtype
        proj = getattr(self, "v_proj", None)
        tokens = layer_tokens.to(dtype)
        if proj is None:
            return tokens
        bias = proj.bias.to(dtype) if proj.bias is not None else None
        return F.linear(tokens, proj.weight.to(dtype), bias)

    def mix(self, weights, layer_tokens, nodes=None):
        """Per-node features ``v_n = sum_j a_nj h'_j`` ``(B, K, D)`` for some nodes only.

        Args:
            weights: ``(B, N, M)`` from :meth:`attention`.
            layer_tokens: ``(B, M, D)``.
            nodes: ``None`` (all ``N``) or ``(B, K)`` node ids per sample (e.g. each
                sample's path), or ``(K,)`` shared by the batch.
        """
        if nodes is not None:
            if nodes.dim() == 1:
                weights = weights.index_select(1, nodes)
            else:
                weights = torch.gather(weights, 1, nodes.unsqueeze(-1).expand(-1, -1, weights.shape[-1]))
        return (weights @ self.values(layer_tokens, weights.dtype)).to(layer_tokens.dtype)

    def cosines(self, text, layer_tokens, weights=None, eps=1e-12):
        """``cos(v_n, t_n)`` ``(B, N)`` without forming the ``(B, N, D)`` features ``v_n``.

        With ``h'_j`` the value-projected tokens and ``u_n = t_n / |t_n|``::

            v_n . u_n = sum_j a_nj (h'_j . u_n),   |v_n|^2 = sum_jk a_nj a_nk (h'_j . h'_k)

        so only ``(B, N, M)`` and ``(B, M, M)`` tensors are formed. Equal (values and
        gradients) to ``F.normalize(v) . F.normalize(t)`` of :meth:`forward`'s ``v``, with
        the same ``eps`` guard on both norms.

        Args:
            text: ``(N, D)`` text node features; layer_tokens: ``(B, M, D)``.
            weights: ``(B, N, M)`` from :meth:`attention`, when already computed.
        """
        if weights is None:
            weights = self.attention(text, layer_tokens)
        dtype = weights.dtype
        h = self.values(layer_tokens, dtype)  # (B, M, D)
        unit = F.normalize(text.to(dtype), dim=-1, eps=eps)  # (N, D)
        dots = (h @ unit.t()).transpose(1, 2)  # (B, N, M): h'_j . u_n
        along = (weights * dots).sum(-1)  # (B, N): v_n . u_n
        gram = h @ h.transpose(1, 2)  # (B, M, M)
        square = ((weights @ gram) * weights).sum(-1)  # (B, N): |v_n|^2
        norm = square.clamp_min(eps * eps).sqrt()  # = max(|v_n|, eps), zero gradient below
        return along / norm

    def forward(self, text, layer_tokens, return_weights=False):
        """Selected image features ``(B, N, D)`` in ``layer_tokens``' dtype (materialised:
        for inspection and tests; scores use :meth:`cosines`, path terms :meth:`mix`).

        Args:
            text: ``(N, D)`` text node features (queries).
            layer_tokens: ``(B, M, D)`` layer tokens (keys and values).
            return_weights: also return the ``(B, N, M)`` weights.
        """
        weights = self.attention(text, layer_tokens)
        mixed = self.mix(weights, layer_tokens)  # (B, N, D)
        return (mixed, weights) if return_weights else mixed
