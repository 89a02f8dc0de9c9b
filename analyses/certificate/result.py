"""The certificate result object and its renderings: metrics.json, metrics.csv rows, the text summary
and the verdict sentences.

metrics.json (``schema_version`` 2) holds the issue's fields at the top level — ``per_digit.lower``,
``per_digit.upper``, ``sequence.lower``, ``sequence.upper`` (fractions of all (input, position) pairs /
all inputs), ``inputs`` (C^N, an exact integer), ``wrong_examples`` (``{"tokens", "position"}``, each
re-checked by the model's forward here before it is listed) — then ``compute`` (seconds, boxes, FLOPs
against brute force's), ``census`` (regions proven wrong: readable constraints and exact counts),
``method``, ``arithmetic``, ``regime``, ``verdict``, ``theorem`` and ``cells``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyses.frame.numbers import bounds
from analyses.frame.result import AnalysisResult

ANALYSIS = "certificate"
# 3: settings.suspects (inputs the proof dived on first: --suspect, --tolerance's adversary)
# 2: settings.max_boxes (the deterministic budget, --budget-boxes), settings.budget_seconds None when there
# is no time budget, compute.stopped_by and compute.budget (which budget stopped the proof)
SCHEMA_VERSION = 3
DEFAULT_OUT = Path("out") / ANALYSIS
DEFAULT_BUDGET_SECONDS = 600.0
METHODS = ("auto", "proof")  # what the command offers; the engine's "enumeration" is auto's choice
# The regime every verdict names: what "right" means and which computation it is about.
REGIMES = {
    "proof": "over all C^N inputs, float32 forward on any x86-64 CPU, argmax ties counted as wrong",
    "enumeration": (
        "over all C^N inputs, float32 forward with this machine's CPU kernels (every input evaluated), "
        "argmax ties counted as wrong"
    ),
}
CELL_COLUMNS = ("right", "wrong", "unresolved", "guarantee_weight", "min_weight")


def describe_region(region: dict[str, Any], seq_len: int) -> str:
    """A census region as a sentence: ``output 3 wrong when t[3] = 7, t[12] ∈ {3, 7}; 8 free positions``
    (``region``: ``interp.certificate.Region.to_dict()``)."""
    parts = []
    for pos, digits in sorted(region["constraints"].items(), key=lambda kv: int(kv[0])):
        if len(digits) == 1:
            parts.append(f"t[{pos}] = {digits[0]}")
        else:
            parts.append(f"t[{pos}] ∈ {{{', '.join(map(str, digits))}}}")
    free = seq_len - len(region["constraints"])
    where = ", ".join(parts) if parts else "any input"
    return f"output {region['position']} wrong when {where}; {free} free position{'s' * (free != 1)}"


def bounds_sentence(doc: dict[str, Any]) -> str:
    """The verdict on the bounds, naming its regime, from a metrics.json document."""
    pd, sq = doc["per_digit"], doc["sequence"]
    n, c = doc["seq_len"], doc["num_categories"]
    regime = doc["regime"]
    pairs, inputs = doc["pairs"], doc["inputs"]
    wrong = doc["census"]["wrong_pairs"]
    if doc["resolved"]:
        per_digit = (
            f"exactly {wrong['lower']:,} of the {pairs:,} (input, position) pairs are wrong: per-digit "
            f"accuracy {pairs - wrong['lower']:,}/{pairs:,} (within {bounds(pd['lower'], pd['upper'], 9)})"
        )
    else:
        per_digit = (
            f"{wrong['lower']:,} to {wrong['upper']:,} of the {pairs:,} (input, position) pairs are wrong: "
            f"per-digit accuracy in {bounds(pd['lower'], pd['upper'], 9)}"
        )
    right = doc["sequences_right"]
    if right["lower"] == right["upper"]:
        sequence = (
            f"exactly {right['lower']:,} of the inputs are right at every position: whole-sequence accuracy "
            f"{right['lower']:,}/{inputs:,} (within {bounds(sq['lower'], sq['upper'], 9)})"
        )
    else:  # the proof combines positions: a union bound below, the proven-wrong regions above
        sequence = (
            f"{right['lower']:,} to {right['upper']:,} of the inputs are right at every position: "
            f"whole-sequence accuracy in {bounds(sq['lower'], sq['upper'], 9)}"
        )
    core = f"{per_digit}; {sequence}"
    how = (
        "proven by bound propagation and branch and bound"
        if doc["method"] == "proof"
        else "by evaluating every input"
    )
    budget = (
        f" ({budget_text(doc['settings'], doc['details'].get('stopped_by'))})"
        if doc["method"] == "proof" and not doc["resolved"]
        else ""
    )
    return f"Certified {regime} (C = {c}, N = {n}, {doc['inputs']:,} inputs): {core}, {how}{budget}."


def budget_text(settings: dict[str, Any], stopped_by: str | None = None) -> str:
    """The proof's budget as a reader sees it: ``budget: 20,000 boxes`` / ``budget: 600 s`` / both,
    and, given ``stopped_by`` (the engine's ``details["stopped_by"]``), which one stopped the proof."""
    parts = []
    if settings.get("max_boxes") is not None:
        parts.append(f"{settings['max_boxes']:,} boxes")
    if settings.get("budget_seconds") is not None:
        parts.append(f"{settings['budget_seconds']:g} s")
    text = "budget: " + (" and ".join(parts) if parts else "none")
    stopped = {"max_boxes": "the box budget", "seconds": "the time budget"}.get(stopped_by or "")
    if stopped is not None:
        text += f"; stopped by {stopped}"
    elif stopped_by == "done":
        text += "; the proof finished within it"
    return text


def theorem_sentence(theorem: dict[str, Any]) -> str:
    """The verdict on the tutorial's sentence ("the model can accept an approximate, noisy attention
    map") as a theorem, from the ``theorem`` block of metrics.json."""
    if not theorem["computed"]:
        return f"The tutorial's sentence was not turned into a theorem here: {theorem['reason']}."
    cells, proven = theorem["cells"], theorem["proven_cells"]
    worst = theorem["largest_guarantee"]
    text = (
        f"Theorem ({theorem['regime']}): in {proven:,} of {cells:,} (query position, own digit, flipped "
        "digit) cells, every input gives the flipped key at least the attention weight that guarantees the "
        "right output however the rest of the row is spread"
    )
    if worst is not None:
        text += (
            f"; the most demanding cell (i = {worst['position']}, own {worst['own']}, flipped "
            f"{worst['flipped']}) needs {worst['guarantee_weight']:.3f}"
        )
    if theorem["smallest_min_weight"] is not None:
        text += f", and the model never puts less than {theorem['smallest_min_weight']:.3f} on a flipped key"
    inert = theorem["inert_offsets_everywhere"]
    offsets = (
        f" The digits at offsets {', '.join(f'{d:+d}' for d in inert)} from the flipped key provably never "
        "change whether any output is right."
        if inert
        else ""
    )
    if proven == cells:
        return text + ". The attention map may be approximate: that much of it provably suffices." + offsets
    unproven = cells - proven
    return (
        text + f". In the other {unproven:,} cells the model's weight can fall below the guarantee (or no "
        "guarantee exists), so the sentence is not a theorem there." + offsets
    )


@dataclass(repr=False)
class CertificateResult(AnalysisResult):
    """The certificate of one model, with what the command added: re-checked examples, the readable
    census, the theorem summary and (when given) ``analyses.tolerance``'s sampled thresholds.

    ``certificate`` is ``interp.certificate.Certificate.to_dict()``; ``examples_unconfirmed`` counts the
    engine's examples that the model's forward here did not confirm wrong (left out of the list).
    """

    ANALYSIS = ANALYSIS
    SCHEMA_VERSION = SCHEMA_VERSION
    CSV_FIELDS = ("scope", "position", "own", "flipped", "metric", "value")

    certificate: dict[str, Any]
    method_requested: str
    budget_seconds: float | None
    wrong_examples: list[dict[str, Any]]
    examples_unconfirmed: int
    tolerance: list[dict[str, Any]] | None
    tolerance_source: str | None
    config: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None  # nothing is sampled: kept None for the frame's provenance record
    num_sequences: int | None = None
    theorems: bool = True  # whether the theorem columns were asked for
    max_boxes: int | None = None  # the proof's deterministic work budget (None: none)
    suspects: list[list[int]] = field(default_factory=list)  # inputs the proof dived on first

    @property
    def seq_len(self) -> int:
        return int(self.certificate["seq_len"])

    @property
    def method(self) -> str:
        return str(self.certificate["method"])

    @property
    def regime(self) -> str:
        return REGIMES[self.method]

    def theorem(self) -> dict[str, Any]:
        """The theorem block: cells whose smallest flipped-key weight reaches the guarantee."""
        cert = self.certificate
        cells = cert["cells"]
        computed = bool(cells) and all(
            c["guarantee_weight"] is not None or c["min_weight"] is not None for c in cells
        )
        if not computed:
            if not self.theorems:
                reason = (
                    "the theorem columns were left out (about 15 s more on a 10-digit, 16-position model: "
                    "run python -m analyses.certificate, or reports.build --certificate-theorems)"
                )
            elif cert["method"] == "enumeration":
                reason = "the guarantee and minimum weights come from the proof method; enumeration ran"
            else:
                reason = cert.get("unsupported") or "the engine computed no theorem columns"
            return {"computed": False, "reason": reason, "regime": self.regime}
        proven = [
            c
            for c in cells
            if c["guarantee_weight"] is not None
            and c["min_weight"] is not None
            and c["min_weight"] >= c["guarantee_weight"]
        ]
        guaranteed = [c for c in cells if c["guarantee_weight"] is not None]
        worst = max(guaranteed, key=lambda c: c["guarantee_weight"]) if guaranteed else None
        weights = [c["min_weight"] for c in cells if c["min_weight"] is not None]
        inert = sorted(
            {p - (self.seq_len - 1 - c["position"]) for c in cells for p in (c.get("inert_positions") or [])}
        )
        everywhere: dict[int, bool] = {}  # offset d → key j + d inert in every cell where it exists
        for c in cells:
            i, j = c["position"], self.seq_len - 1 - c["position"]
            held = set(c.get("inert_positions") or [])
            for p in range(self.seq_len):
                if p not in (i, j):
                    everywhere[p - j] = everywhere.get(p - j, True) and p in held
        return {
            "computed": True,
            "regime": self.regime,
            "cells": len(cells),
            "proven_cells": len(proven),
            "cells_without_guarantee": len(cells) - len(guaranteed),
            "largest_guarantee": None
            if worst is None
            else {k: worst[k] for k in ("position", "own", "flipped", "guarantee_weight", "min_weight")},
            "smallest_min_weight": min(weights) if weights else None,
            "inert_offsets_somewhere": inert,
            "inert_offsets_everywhere": sorted(d for d, held in everywhere.items() if held),
        }

    def census(self) -> dict[str, Any]:
        cert = self.certificate
        n = self.seq_len
        return {
            "wrong_pairs": {"lower": cert["wrong_count_lower"], "upper": cert["wrong_count_upper"]},
            "exact": cert["resolved"] and cert["regions_complete"],
            "complete": cert["regions_complete"],
            # the largest regions first (then by output position and pattern)
            "regions": [
                {**r, "description": describe_region(r, n)}
                for r in sorted(
                    cert["wrong_regions"], key=lambda r: (-r["count"], r["position"], r["pattern"])
                )
            ],
            "listed_count": sum(r["count"] for r in cert["wrong_regions"]),
        }

    def to_dict(self) -> dict[str, Any]:
        """The metrics.json document (see the module docstring)."""
        cert = self.certificate
        doc: dict[str, Any] = {
            **self.header(),
            "settings": {
                "method_requested": self.method_requested,
                "budget_seconds": self.budget_seconds,
                "max_boxes": self.max_boxes,
                "suspects": self.suspects,
                "theorems": self.theorems,
                "seq_len": cert["seq_len"],
                "num_categories": cert["num_categories"],
            },
            "per_digit": dict(cert["per_digit"]),
            "sequence": dict(cert["sequence"]),
            "inputs": cert["inputs"],
            "pairs": cert["pairs"],
            "seq_len": cert["seq_len"],
            "num_categories": cert["num_categories"],
            "resolved": cert["resolved"],
            "sequences_right": {
                "lower": cert["sequence_right_lower"],
                "upper": cert["sequence_right_upper"],
            },
            "wrong_examples": self.wrong_examples,
            "examples_unconfirmed": self.examples_unconfirmed,
            "compute": {
                "seconds": cert["seconds"],
                "boxes": cert["boxes"],
                "stopped_by": cert["details"].get("stopped_by"),
                "budget": budget_text(
                    {"budget_seconds": self.budget_seconds, "max_boxes": self.max_boxes},
                    cert["details"].get("stopped_by"),
                ),
                "flops": cert["flops"],
                "brute_force_flops": cert["brute_force_flops"],
                "brute_force_over_certificate": cert["speedup"],
            },
            "census": self.census(),
            "method": cert["method"],
            "arithmetic": cert["arithmetic"],
            "regime": self.regime,
            "unsupported": cert["unsupported"],
            "theorem": self.theorem(),
            "tolerance_thresholds": self.tolerance,
            "tolerance_source": self.tolerance_source,
            "cells": cert["cells"],
            "details": cert["details"],
        }
        doc["verdict"] = {"bounds": bounds_sentence(doc), "theorem": theorem_sentence(doc["theorem"])}
        return doc

    def csv_rows(self) -> list[dict[str, Any]]:
        """Model-wide rows (bounds, counts, compute) and one row per (cell, column)."""
        cert = self.certificate
        model = {
            "per_digit_lower": cert["per_digit_lower"],
            "per_digit_upper": cert["per_digit_upper"],
            "sequence_lower": cert["sequence_lower"],
            "sequence_upper": cert["sequence_upper"],
            "inputs": cert["inputs"],
            "wrong_pairs_lower": cert["wrong_count_lower"],
            "wrong_pairs_upper": cert["wrong_count_upper"],
            "seconds": cert["seconds"],
            "boxes": cert["boxes"],
            "flops": cert["flops"],
            "brute_force_flops": cert["brute_force_flops"],
        }
        rows = [
            {"scope": "model", "position": None, "own": None, "flipped": None, "metric": k, "value": v}
            for k, v in model.items()
        ]
        for c in cert["cells"]:
            where = {"scope": "cell", "position": c["position"], "own": c["own"], "flipped": c["flipped"]}
            rows += [{**where, "metric": k, "value": c[k]} for k in CELL_COLUMNS]
        return rows

    def summary(self) -> str:
        doc = self.to_dict()
        comp = doc["compute"]
        ratio = comp["brute_force_over_certificate"]
        lines = [
            doc["verdict"]["bounds"],
            f"method {doc['method']} (asked: {self.method_requested}"
            + (f"; {comp['budget']}" if doc["method"] == "proof" else "")
            + f"); {comp['seconds']:.1f} s, {comp['boxes']:,} boxes, {comp['flops']:.3g} FLOPs against "
            "brute force's "
            f"{comp['brute_force_flops']:.3g}" + (f" (ratio {ratio:.3g})" if ratio else ""),
            f"census: {doc['census']['wrong_pairs']['lower']:,}–{doc['census']['wrong_pairs']['upper']:,} "
            f"wrong pairs; {len(doc['census']['regions'])} regions listed"
            + ("" if doc["census"]["complete"] else " (not all)"),
        ]
        lines += [
            f"  {r['pattern']}  {r['description']} ({r['count']:,} inputs)"
            for r in doc["census"]["regions"][:5]
        ]
        lines.append(doc["verdict"]["theorem"])
        return "\n".join(lines)

    def headline(self) -> str:
        pd = self.certificate["per_digit"]
        return f"per-digit accuracy {bounds(pd['lower'], pd['upper'], 6)} ({self.method})"

    def __repr__(self) -> str:
        return f"<CertificateResult {self.headline()}>"


CSV_FIELDS = CertificateResult.CSV_FIELDS
