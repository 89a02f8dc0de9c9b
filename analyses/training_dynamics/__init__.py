"""Does the flip alignment form before, with or after the accuracy jump? Progress measures over training.

Train with snapshots (``python -m models.train ... --save-every-log-steps K`` writes the encoder at
log-spaced steps and at the step training ended to ``RUN/snapshots/step_XXXXXX.pt``), then for every
snapshot (and the run's ``model.pt`` when its step has no snapshot) evaluate on the same random sequences:

- accuracy and loss (held-out: fresh random sequences), and both with the positional encoding zeroed;
- per head: flip mass A[i, N−1−i], neighbour mass (keys N−1−i ± 1, ± 2), row entropy, argmax hit rate;
- the *restricted* loss: every attention row of every head restricted to the keys |k − (N−1−i)| ≤ w
  (w = 1) and renormalised, A'[i, k] = A[i, k]·[|k − f(i)| ≤ w] / Σ_k' A[i, k']·[|k' − f(i)| ≤ w];
- the *excluded* loss: the flipped key removed from every row and the row renormalised,
  A'[i, k] = A[i, k]·[k ≠ f(i)] / (1 − A[i, f(i)]).

A restricted loss close to the loss says the model needs nothing outside the flip window; an excluded
loss far above it says it needs the flipped key itself. Then the step at which each curve first passes
fractions (default 10%, 50%, 90%) of its way from initial to final value, with bootstrap CIs over the
evaluation sequences, and the paired difference "flip mass crossing − accuracy crossing" whose CI
answers before (< 0) / with (∋ 0) / after (> 0) — or "unresolved" when both cross between the same two
snapshots, where only more snapshots can tell. See :mod:`analyses.training_dynamics.crossings` for the maths.

Python: ``result = run(find_snapshots("runs/tutorial-seed0"))``; ``write_outputs(result, "out/td")``.
CLI:    ``python -m analyses.training_dynamics --run DIR [--out DIR] ...`` (see ``--help``).
"""

from analyses.frame.command import Outputs
from analyses.training_dynamics.measure import run
from analyses.training_dynamics.result import (
    ANALYSIS,
    CSV_FIELDS,
    DEFAULT_OUT,
    SCHEMA_VERSION,
    TrainingDynamicsResult,
)
from analyses.training_dynamics.snapshots import find_snapshots

OUTPUTS = Outputs(ANALYSIS, source="run")
# Python API: metrics.json, metrics.csv, figures/ and report.html into a folder, all or nothing.
write_outputs = OUTPUTS.write
