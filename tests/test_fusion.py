import math

import pytest
import torch

from hyptree.model.fusion import TextGuidedSelection


def data(batch=3, names=5, layers=4, dim=8, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(names, dim, generator=g).to(dtype), torch.randn(batch, layers, dim, generator=g).to(dtype))


def randomised(dim, seed=1):
    module = TextGuidedSelection(dim)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return module


def test_output_is_the_weighted_sum_of_layer_tokens_with_convex_weights():
    text, tokens = data()
    out, weights = randomised(8)(text, tokens, return_weights=True)
    assert out.shape == (3, 5, 8) and weights.shape == (3, 5, 4)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 5))
    torch.testing.assert_close(out, torch.einsum("bnm,bmd->bnd", weights, tokens))


def test_one_dimensional_output_stays_in_the_convex_hull():
    text, tokens = data(dim=1, layers=5)
    out = randomised(1)(text, tokens)  # (B, N, 1)
    low, high = tokens.min(1).values, tokens.max(1).values  # (B, 1)
    assert (out >= low[:, None] - 1e-6).all() and (out <= high[:, None] + 1e-6).all()


def test_matches_a_brute_force_loop():
    text, tokens = data(batch=2, names=3, layers=3, dim=6)
    module = randomised(6, seed=4)
    out = module(text, tokens)
    wq, bq, wk, bk = module.q.weight, module.q.bias, module.k.weight, module.k.bias
    for b in range(2):
        for n in range(3):
            q = wq @ text[n] + bq
            scores = torch.stack([q @ (wk @ tokens[b, j] + bk) / math.sqrt(6) for j in range(3)])
            weights = torch.softmax(scores, 0)
            expected = sum(weights[j] * tokens[b, j] for j in range(3))
            torch.testing.assert_close(out[b, n], expected, atol=1e-6, rtol=1e-5)


def test_identity_initialisation():
    text, tokens = data()
    module = TextGuidedSelection(8)
    _, weights = module(text, tokens, return_weights=True)
    expected = torch.softmax(torch.einsum("nd,bmd->bnm", text, tokens) / math.sqrt(8), -1)
    torch.testing.assert_close(weights, expected)


def test_only_query_and_key_are_learnable_and_both_get_gradients():
    module = randomised(8)
    assert sorted(n for n, _ in module.named_parameters()) == ["k.bias", "k.weight", "q.bias", "q.weight"]
    text, tokens = data()
    text.requires_grad_(True)
    tokens.requires_grad_(True)
    # a loss that depends on which tokens are picked
    (module(text, tokens) * torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(9))).sum().backward()
    for name, param in module.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert text.grad.abs().sum() > 0 and tokens.grad.abs().sum() > 0


def test_half_inputs_keep_their_dtype_and_stay_close():
    text, tokens = data()
    module = randomised(8)
    out = module(text.half(), tokens.half())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), module(text.half().float(), tokens.half().float()), atol=2e-3, rtol=2e-3)
    _, weights = module(text.half(), tokens.half(), return_weights=True)
    assert weights.dtype == torch.float32  # softmax upcast


def test_shape_errors():
    module = TextGuidedSelection(8)
    with pytest.raises(ValueError, match="expected text"):
        module(torch.zeros(5, 7), torch.zeros(2, 3, 8))
    with pytest.raises(ValueError, match="expected text"):
        module(torch.zeros(5, 8), torch.zeros(3, 8))
