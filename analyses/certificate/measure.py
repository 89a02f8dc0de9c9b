"""``run``: certify a model over all C^N inputs with ``interp.certify``, re-check its wrong examples with
the model's own forward, and attach ``analyses.tolerance``'s sampled thresholds when given.

The tolerance thresholds are read from that analysis' metrics.json (analyses never import each other):
the flip mass at which sampled accuracy falls below each level along each pattern family.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from analyses.certificate.result import ANALYSIS, DEFAULT_BUDGET_SECONDS, METHODS, CertificateResult
from analyses.frame import arguments
from analyses.frame.cli import UserError
from analyses.frame.loading import as_model, records_source

TOLERANCE_FILE = "metrics.json"


def recheck_examples(model: Any, examples: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """(the examples the model's float32 forward confirms wrong, how many it did not).

    Example k is ``{"tokens": [N digits], "position": i}``; it is confirmed when the logit of the target
    t_{N−1−i} at output i is not strictly above every other logit (an argmax tie is wrong). Each input is
    run on its own (batch of one), as a user would check it.
    """
    from interp.certificate.enumerate import right_positions

    confirmed, unconfirmed = [], 0
    device = next(model.parameters()).device
    with torch.inference_mode():
        for example in examples:
            tokens = torch.tensor([list(example["tokens"])], dtype=torch.int64)
            logits = model(tokens.to(device)).float().cpu()
            if not bool(right_positions(logits, tokens)[0, int(example["position"])]):
                confirmed.append(
                    {"tokens": [int(t) for t in example["tokens"]], "position": int(example["position"])}
                )
            else:
                unconfirmed += 1
    return confirmed, unconfirmed


def load_tolerance(path: str | Path) -> tuple[list[dict[str, Any]], str]:
    """The accuracy thresholds of an ``analyses.tolerance`` output (its folder or its metrics.json):
    ``[{"family", "level", "flip_mass": {"mean", "ci_low", "ci_high", "below_range", "above_range"},
    "status"}]`` and the file read. ``UserError`` (one line naming the path) when it is not one."""
    document, file = _tolerance_document(path)
    thresholds = [
        {
            "family": t["family"],
            "level": t["level"],
            "flip_mass": t["flip_mass"],
            "status": t["status"],
        }
        for t in document.get("thresholds", [])
        if t.get("statistic") == "accuracy"
    ]
    return thresholds, file


def tolerance_suspects(path: str | Path) -> list[list[int]]:
    """The inputs ``analyses.tolerance``'s adversary found the model wrong on (its beam searches for the
    smallest vote and logit margins, ``worst_case``), as digit lists: where the proof dives first."""
    document, _ = _tolerance_document(path)
    found = []
    for search in (document.get("worst_case") or {}).values():
        if isinstance(search, dict) and search.get("model_wrong") and isinstance(search.get("digits"), str):
            digits = [int(d) for d in search["digits"].split()]
            if digits not in found:
                found.append(digits)
    return found


def parse_suspect(text: str, num_categories: int, seq_len: int, flag: str = "--suspect") -> list[int]:
    """An input typed by a user — ``7777773773777777`` (C ≤ 10) or ``7 7 3 ...`` — as N digits in
    [0, C); ``UserError`` (one line naming the input) otherwise."""
    words = text.split() if " " in text.strip() else list(text.strip())
    if not words or not all(w.isdigit() for w in words):
        raise UserError(f"{flag} {text!r}: not a sequence of digits")
    digits = [int(w) for w in words]
    if len(digits) != seq_len:
        raise UserError(f"{flag} {text!r}: {len(digits)} digits, the certificate's inputs have {seq_len}")
    if max(digits) >= num_categories:
        raise UserError(f"{flag} {text!r}: digit {max(digits)} is not below C = {num_categories}")
    return digits


def _tolerance_document(path: str | Path) -> tuple[dict[str, Any], str]:
    """An ``analyses.tolerance`` metrics.json (from its folder or the file) and the file's path."""
    path = Path(path).expanduser()
    file = path / TOLERANCE_FILE if path.is_dir() else path
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(
            f"--tolerance {path}: cannot read a tolerance metrics.json ({type(e).__name__})"
        ) from None
    if not isinstance(document, dict) or document.get("analysis") != "tolerance":
        raise UserError(f"--tolerance {path}: not the metrics.json of python -m analyses.tolerance")
    return document, str(file.absolute())


def progress_lines(log: Callable[[str], None], every: float = 10.0) -> Callable[[dict[str, Any]], None]:
    """A ``progress`` callback for ``interp.certify`` that logs, at most every ``every`` seconds of the
    proof, one line: seconds, regions bounded and pending, and the per-digit bounds proven so far
    (right pairs / N·C^N below, 1 − wrong pairs / N·C^N above, each rounded on its safe side)."""
    from analyses.frame.numbers import share

    last = [-float("inf")]

    def report(state: dict[str, Any]) -> None:
        if state["seconds"] - last[0] < every:
            return
        last[0] = state["seconds"]
        pairs = state["pairs"]
        log(
            f"proof: {state['seconds']:.0f} s, {state['boxes']:,} regions bounded, {state['pending']:,} "
            f"pending; per-digit accuracy in [{share(state['right'], pairs, 'lower', 6)}, "
            f"{share(pairs - state['wrong'], pairs, 'upper', 6)}] so far"
        )

    return report


@records_source(ANALYSIS)
def run(
    model: Any,
    seq_len: int | None = None,
    *,
    method: str = "auto",
    budget_seconds: float | None = DEFAULT_BUDGET_SECONDS,
    max_boxes: int | None = None,
    max_examples: int = 20,
    max_regions: int = 1000,
    batch_size: int = 8192,
    tolerance: str | Path | None = None,
    suspects: Sequence[Sequence[int]] = (),
    theorems: bool = True,
    progress: Callable[[str], None] | None = None,
) -> CertificateResult:
    """Certify ``model`` (one layer) over all C^N inputs (``interp.certify``) and package the result.

    ``method``: ``"auto"`` (enumeration when it is cheaper, else the proof) or ``"proof"``;
    ``budget_seconds``: the proof's wall-clock budget (None: none); ``max_boxes``: its deterministic work
    budget, regions bounded at most (None: none; the same model and ``max_boxes`` give the same bounds
    whatever the machine's load); whichever runs out first stops the proof (the result says which);
    ``tolerance``: an ``analyses.tolerance`` output
    whose sampled thresholds are shown next to the theorem and whose adversary's wrong inputs join
    ``suspects``: inputs suspected wrong (digit lists), where the proof first dives to the largest region
    around each it can prove wrong (so the census holds it whatever the budget); ``theorems``: compute
    the cells' theorem columns (proof, one head; a bisection over every cell after the budget, ~15 s
    on the default model); ``progress``: a function given a line about the proof's progress every 10 s. Raises
    ``interp.certificate.CertificateUnsupported`` (a ``ValueError``, one line) for a model the
    certificate does not cover.
    """
    import interp

    model = as_model(model)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if budget_seconds is not None and not budget_seconds > 0:
        raise ValueError(f"budget_seconds must be positive, got {budget_seconds!r}")
    arguments.positive_ints(max_examples=max_examples, max_regions=max_regions, batch_size=batch_size)
    if max_boxes is not None:
        arguments.positive_ints(max_boxes=max_boxes)
    thresholds, source = load_tolerance(tolerance) if tolerance is not None else (None, None)
    n, c = seq_len or model.cfg.n_ctx, model.cfg.d_vocab
    dives = [[int(t) for t in s] for s in suspects]
    for s in dives:
        if len(s) != n or min(s) < 0 or max(s) >= c:
            raise ValueError(f"suspect {s}: not {n} digits in [0, {c})")
    if tolerance is not None:  # an adversary's input of another length or alphabet does not apply here
        found = tolerance_suspects(tolerance)
        dives += [s for s in found if s not in dives and len(s) == n and max(s) < c]
    was_training = model.training
    model.eval()
    try:
        cert = interp.certify(
            model,
            seq_len,
            method=method,
            budget_seconds=math.inf if budget_seconds is None else float(budget_seconds),
            max_boxes=max_boxes,
            max_examples=max_examples,
            max_regions=max_regions,
            batch_size=batch_size,
            theorems=bool(theorems),
            progress=None if progress is None else progress_lines(progress),
            seeds=[tuple(s) for s in dives],
        )
        examples, unconfirmed = recheck_examples(model, cert.wrong_examples)
    finally:
        model.train(was_training)
    return CertificateResult(
        certificate=cert.to_dict(),
        method_requested=method,
        budget_seconds=None if budget_seconds is None else float(budget_seconds),
        max_boxes=None if max_boxes is None else int(max_boxes),
        wrong_examples=examples,
        examples_unconfirmed=unconfirmed,
        tolerance=thresholds,
        tolerance_source=source,
        config=model.cfg.to_dict(),
        theorems=bool(theorems),
        suspects=dives,
    )
