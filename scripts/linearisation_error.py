"""How far are the linear shortcuts from the real thing on this model? Prints two measurements.

1. **Attribution patching vs activation patching** (corrupt input position p = 3 to another digit;
   metric: logit difference at output q = N−1−p between the clean and the corrupted digit, per
   sequence). For ``blocks.0.hook_attn_out`` and ``blocks.0.hook_resid_pre`` at every position, the real
   effect of patching the clean activation into the corrupted run, as a share of the clean − corrupted
   metric gap, against its first-order estimate ``(a_clean − a_corrupted) · ∂metric/∂a`` taken on the
   corrupted run (``run_with_cache(return_type=..., incl_bwd=True)``-style gradients).
2. **Frozen-LayerNorm decomposition**: ``interp.residual.removal_error`` per component — the relative
   error of "remove component c" predicted with every LayerNorm scale frozen, against removing it.

Every number comes with a 95% bootstrap CI over sequences. ``--out DIR`` also writes every number to
``DIR/metrics.json`` (``scripts/figures.py`` quotes them in docs/guide/transformer-lens.md). Usage::

    python scripts/linearisation_error.py [--checkpoint PATH] [--num-sequences 1000] [--seed 0]
                                          [--out DIR] [--quiet]
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from analyses.frame.files import write_json
from analyses.frame.provenance import provenance
from interp.residual import removal_error
from interp.stats import bootstrap_ci
from models import load_model
from models.encoder.data import make_reverse_data
from models.storage.integrity import sha256_file


def gap_metric(logits: torch.Tensor, clean: torch.Tensor, corrupted: torch.Tensor, p: int) -> torch.Tensor:
    """Per sequence: ℓ_q[clean digit] − ℓ_q[corrupted digit] at q = N − 1 − p."""
    at = logits[:, logits.shape[1] - 1 - p]
    return at.gather(-1, clean[:, p, None]).squeeze(-1) - at.gather(-1, corrupted[:, p, None]).squeeze(-1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="default: the cached default model")
    parser.add_argument("--num-sequences", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write OUT/metrics.json")
    parser.add_argument("--quiet", action="store_true", help="print nothing")
    args = parser.parse_args(argv)
    say = (lambda *a, **k: None) if args.quiet else print
    record: dict = {"num_sequences": args.num_sequences, "seed": args.seed, "patching": {}, "removal": {}}
    torch.set_num_threads(1)
    model = load_model(args.checkpoint)
    p, n = 3, model.cfg.n_ctx
    clean = make_reverse_data(args.num_sequences, n, model.cfg.d_vocab, seed=args.seed)
    corrupted = clean.clone()
    # the corrupting digits drawn from --seed too: same seed, same numbers
    generator = torch.Generator().manual_seed(args.seed)
    corrupted[:, p] = (
        clean[:, p] + 1 + torch.randint(0, model.cfg.d_vocab - 1, (len(clean),), generator=generator)
    ) % model.cfg.d_vocab

    sites = ["blocks.0.hook_attn_out", "blocks.0.hook_resid_pre"]
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean, names_filter=sites)
        corrupted_logits = model(corrupted)
    m_clean = gap_metric(clean_logits, clean, corrupted, p)
    m_corrupted = gap_metric(corrupted_logits, clean, corrupted, p)
    gap = (m_clean - m_corrupted).double()

    # Gradients of the summed per-sequence metric on the corrupted run (each sequence's own gradient).
    grads: dict[str, torch.Tensor] = {}
    acts: dict[str, torch.Tensor] = {}

    def keep(act: torch.Tensor, hook) -> torch.Tensor:
        act.retain_grad()
        acts[hook.name] = act
        return act

    logits = model.run_with_hooks(corrupted, fwd_hooks=[(name, keep) for name in sites])
    gap_metric(logits, clean, corrupted, p).sum().backward()
    for name in sites:
        grads[name] = acts[name].grad.detach()
        acts[name] = acts[name].detach()

    record.update(corrupted_input=p, output=n - 1 - p)
    record["provenance"] = provenance(
        analysis="linearisation_error",
        checkpoint=model.checkpoint_path,
        checkpoint_sha256=sha256_file(model.checkpoint_path) if model.checkpoint_path else None,
        config=model.cfg.to_dict(),
        seed=args.seed,
        num_sequences=args.num_sequences,
        from_cli=False,
    )
    record["provenance"]["command"] = shlex.join(
        ["python", "scripts/linearisation_error.py", *(sys.argv[1:] if argv is None else argv)]
    )
    say(f"model: {model.checkpoint_path}; {args.num_sequences:,} sequences, input {p} corrupted")
    say(f"\n1. share of the logit gap at output {n - 1 - p} restored by patching one position (95% CI)")
    for name in sites:
        say(f"  {name}")
        say(f"  {'pos':>4} {'activation patching':>28} {'attribution patching':>28}")
        for pos in range(n):

            def patch(act: torch.Tensor, hook, pos: int = pos, name: str = name) -> torch.Tensor:
                act = act.clone()
                act[:, pos] = clean_cache[name][:, pos]
                return act

            with torch.no_grad():
                patched = gap_metric(
                    model.run_with_hooks(corrupted, fwd_hooks=[(name, patch)]), clean, corrupted, p
                )
            real = (patched - m_corrupted).double()
            linear = ((clean_cache[name][:, pos] - acts[name][:, pos]) * grads[name][:, pos]).sum(-1).double()
            cells, shares, estimates = [], [], {}
            for kind, values in (("activation", real), ("attribution", linear)):
                (e,) = bootstrap_ci(values.numpy(), gap.numpy(), resamples=1000, seed=args.seed)
                cells.append(f"{e.mean:8.3f} [{e.ci_low:6.3f}, {e.ci_high:6.3f}]")
                shares.append(abs(e.mean))
                estimates[kind] = {"mean": e.mean, "ci_low": e.ci_low, "ci_high": e.ci_high}
            record["patching"].setdefault(name, []).append({"position": pos, **estimates})
            if pos in (p, n - 1 - p) or max(shares) > 0.02:
                say(f"  {pos:>4} {cells[0]:>28} {cells[1]:>28}")
        others = max(
            max(abs(x["activation"]["mean"]), abs(x["attribution"]["mean"]))
            for x in record["patching"][name]
            if x["position"] not in (p, n - 1 - p)
        )
        record["patching_other_positions_max"] = max(record.get("patching_other_positions_max", 0.0), others)
        say(
            "       (other positions: both |share| ≤ 0.02)"
            if others <= 0.02
            else f"       (others ≤ {others:.3f})"
        )

    say("\n2. frozen-LayerNorm decomposition: relative error of 'remove component c' (mean, 95% CI)")
    with torch.no_grad():
        errors = removal_error(model, clean[:500])
    for label, error in errors.items():
        (e,) = bootstrap_ci(error.double().numpy(), resamples=1000, seed=args.seed)
        say(f"  {label:>12}: {e.mean:.3f} [{e.ci_low:.3f}, {e.ci_high:.3f}]")
        record["removal"][label] = {"mean": e.mean, "ci_low": e.ci_low, "ci_high": e.ci_high}
    worst = max(float(np.median(v.numpy())) for v in errors.values())
    say(f"  (median over sequences of the largest: {worst:.3f})")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(args.out / "metrics.json", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
