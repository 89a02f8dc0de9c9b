"""A hand-built encoder whose output is *exactly* the plurality vote of one head's attention pattern.

With C digits, d_model = 2C per head: the token embedding writes one-hot(t) into dims C..2C−1 (no
positional encoding); head 0's value reads those dims, ``o_proj`` writes its output into dims 0..C−1,
so resid_mid = [V_i (the digit votes), one-hot(t_i), 0...]; the MLP is zero; the output head keeps
dims 0..C−1. LayerNorm (unit weight, zero bias) shifts and scales all dims of a row alike, and the
final ReLU only cuts values below the row mean, which the largest vote (≥ 1/C) never is, so

    logits_{i,c} = α_i · relu(V_{i,c} − β_i)   with α_i > 0, β_i < max_c V_{i,c}:

argmax logits = argmax votes, and the logit margin has the vote margin's sign. Other heads (if any)
have a zero output projection. The attention pattern itself is set by the tests with
``interp.ablation.replace_pattern`` (queries and keys are zero, so the model's own pattern is uniform).
"""

from __future__ import annotations

import torch

from models import EncoderConfig, HookedReverseEncoder


def vote_machine(num_categories: int = 10, n_ctx: int = 16, n_heads: int = 1) -> HookedReverseEncoder:
    c = num_categories
    d = 2 * c * n_heads
    cfg = EncoderConfig(
        n_layers=1, n_heads=n_heads, d_model=d, d_vocab=c, n_ctx=n_ctx, positional_embedding="none"
    )
    model = HookedReverseEncoder(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for name, p in model.named_parameters():
            if name.endswith("ln1.w") or name.endswith("ln2.w") or name.endswith("ln.w"):
                p.fill_(1.0)
        digits = torch.arange(c)
        model.embed.proj.weight[c + digits, digits] = 1.0
        qkv = model.blocks[0].attn.qkv_proj.weight.view(n_heads, 3, cfg.d_head, d)
        qkv[0, 2, digits, c + digits] = 1.0  # head 0's value: v_e = x_{C+e}
        model.blocks[0].attn.o_proj.weight[digits, digits] = 1.0  # head 0's z dims 0..C−1 → resid 0..C−1
        model.head.fc_in.weight[digits, digits] = 1.0
        model.head.fc_out.weight[digits, digits] = 1.0
    return model.eval()


def flip_vote_machine(
    score: float, num_categories: int = 10, n_ctx: int = 16, n_heads: int = 1
) -> HookedReverseEncoder:
    """The vote machine with a pattern of its own: head 0 scores key j for query i as ``score`` · [j = N−1−i]
    (zero elsewhere), so every row puts p = e^score / (e^score + N − 1) on the flipped key and
    q = (1 − p) / (N − 1) on each other key, whatever the tokens; its output is the plurality vote.

    Residual dims: 0..C−1 the votes (head 0's output), C..2C−1 one-hot(t), 2C..2C+N−1 one-hot(position)
    (a learned positional encoding); queries read the position one-hot as one-hot(N−1−i), keys as
    one-hot(j). The LayerNorms see every row hold 1 + 1 + 1 in total, so their shift is the same for
    every row and the largest vote stays above it (see :func:`vote_machine`). Other heads are silent.
    """
    c, n = num_categories, n_ctx
    d = 2 * c + n
    d = -(-d // n_heads) * n_heads  # divisible by the head count
    cfg = EncoderConfig(
        n_layers=1, n_heads=n_heads, d_model=d, d_vocab=c, n_ctx=n, positional_embedding="learned"
    )
    if cfg.d_head < max(n, c):
        raise ValueError(f"d_head {cfg.d_head} cannot hold {n} positions: use fewer heads")
    model = HookedReverseEncoder(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for name, p in model.named_parameters():
            if name.endswith("ln1.w") or name.endswith("ln2.w") or name.endswith("ln.w"):
                p.fill_(1.0)
        digits, positions = torch.arange(c), torch.arange(n)
        model.embed.proj.weight[c + digits, digits] = 1.0
        model.pos_embed.W_pos[positions, 2 * c + positions] = 1.0
        qkv = model.blocks[0].attn.qkv_proj.weight.view(n_heads, 3, cfg.d_head, d)
        qkv[0, 0, n - 1 - positions, 2 * c + positions] = float(score) * cfg.d_head**0.5  # q = onehot(N−1−i)
        qkv[0, 1, positions, 2 * c + positions] = 1.0  # k = onehot(j)
        qkv[0, 2, digits, c + digits] = 1.0  # v = one-hot(t)
        model.blocks[0].attn.o_proj.weight[digits, digits] = 1.0
        model.head.fc_in.weight[digits, digits] = 1.0
        model.head.fc_out.weight[digits, digits] = 1.0
    return model.eval()


def redundant_flip_machine(score: float, num_categories: int = 10, n_ctx: int = 16) -> HookedReverseEncoder:
    """:func:`flip_vote_machine` with two heads that are copies: head 1 has head 0's query, key and value
    and writes its votes into the same residual dims, so the output is the plurality of the *sum* of the
    two heads' votes. Either head alone (the other's output zeroed) is the one-head vote machine, so each
    head alone suffices: degrading one head's pattern leaves the other's intact vote in charge."""
    model = flip_vote_machine(score, num_categories, n_ctx, n_heads=2)
    c, d_head = num_categories, model.cfg.d_head
    with torch.no_grad():
        qkv = model.blocks[0].attn.qkv_proj.weight.view(2, 3, d_head, model.cfg.d_model)
        qkv[1] = qkv[0]
        digits = torch.arange(c)
        model.blocks[0].attn.o_proj.weight[digits, d_head + digits] = 1.0
    return model.eval()
