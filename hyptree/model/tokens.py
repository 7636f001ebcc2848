"""Tokenising prompt texts with CLIP's BPE tokenizer (shared by the learners and PromptSRC)."""

import torch
from clip.simple_tokenizer import SimpleTokenizer

__all__ = ["tokenizer", "special_token", "tokenize_prompts"]

_TOKENIZER = None


def tokenizer():
    """The process-wide ``SimpleTokenizer`` (built on first use)."""
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = SimpleTokenizer()
    return _TOKENIZER


def special_token(name):
    """Id of a special token such as ``<|endoftext|>``."""
    return tokenizer().encoder[name]


def tokenize_prompts(texts, context_length=77, middle=None):
    """Token ids ``(len(texts), context_length)`` (int64) for prompt texts.

    ``middle`` (a list of ids) is inserted right after SOS, before the text: used for the
    context placeholders. Raises ``ValueError`` naming the text when a prompt does not fit.
    """
    tok = tokenizer()
    sot, eot = special_token("<|startoftext|>"), special_token("<|endoftext|>")
    middle = list(middle or [])
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = [sot] + middle + tok.encode(text) + [eot]
        if len(ids) > context_length:
            raise ValueError(
                f"prompt for {text!r} has {len(ids)} tokens, more than the context "
                f"length {context_length}; shorten the name or use a display name"
            )
        out[row, : len(ids)] = torch.tensor(ids)
    return out
