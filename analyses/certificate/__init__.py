"""Certified accuracy of a 1-layer reverse encoder over all C^N inputs, not a sample (issue 26).

Every other analysis measures the model on random sequences; this one proves (or, for small C^N,
enumerates) what it does on every input: lower and upper bounds on per-digit accuracy (right
(input, position) pairs over N·C^N) and on whole-sequence accuracy, the census of the regions proven
wrong (constraints on positions and digits, exact counts, examples re-checked by the model's forward),
the compute against brute force, and the tutorial's sentence ("the model can accept an approximate,
noisy attention map") as a theorem per (query position, own digit, flipped digit) cell: the smallest
flipped-key weight that guarantees the right output over every context, next to the smallest weight
the model actually puts there. The engine is ``interp.certify`` (docs/certificate-engine.md).

Python: ``result = run(model, method="auto", budget_seconds=600)`` (a model or a checkpoint path);
``write_outputs(result, "out/certificate")``; ``result.summary()``, ``result.to_dataframe()``.
CLI:    ``python -m analyses.certificate [--checkpoint PATH] [--budget-boxes N] [--budget-seconds S]
        [--method auto|proof]`` (``--budget-boxes``: a deterministic budget, the same bounds on any load).
"""

from analyses.certificate.measure import run
from analyses.certificate.result import (
    ANALYSIS,
    CSV_FIELDS,
    DEFAULT_OUT,
    SCHEMA_VERSION,
    CertificateResult,
)
from analyses.frame.command import Outputs

OUTPUTS = Outputs(ANALYSIS)
# Python API: metrics.json, metrics.csv, figures/ and report.html into a folder, all or nothing.
write_outputs = OUTPUTS.write

__all__ = [
    "ANALYSIS",
    "CSV_FIELDS",
    "DEFAULT_OUT",
    "OUTPUTS",
    "SCHEMA_VERSION",
    "CertificateResult",
    "run",
    "write_outputs",
]
