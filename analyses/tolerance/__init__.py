"""How approximate may the attention be? The verdict on the tutorial's first sentence, and the readout.

The tutorial: "the model does not need perfect, strict attention to solve the task and can accept an
approximate, noisy attention map". Its flip head puts ~57% of each row's weight on the flipped key
f(i) = N − 1 − i and is 100% accurate; how much less would do?

- **Families** (:mod:`interp.pattern_families`), each applied to the head's own pattern A through
  ``hook_pattern``, from A (the identity point) towards less weight on f(i): temperature τ on the scores
  (A^(1/τ), renormalised; τ < 1 sharper, τ > 1 blurrier), mixing with the ±1/±2 neighbours
  ((1 − s) A + s B), mixing with uniform, and moving a share s of f(i)'s weight to the single key
  f(i) + 1. Every point of every family runs in one tiled forward (:mod:`interp.tolerance`). Per point:
  accuracy per digit and per sequence and the resulting flip mass, means with CIs over sequences.
- **Thresholds** (:mod:`interp.thresholds`): the flip mass at which accuracy first falls below
  ``level`` (99%) and ``breaking_level`` (50%) walking along each family, interpolated between grid
  points, each bootstrap resample recomputing its own crossing; censored as "below/above the tested
  range" when the grid never crosses or starts below. The *margin* is the model's own flip mass minus
  the threshold.
- **Verdict** (:mod:`interp.tolerance_verdict`): right / partly right / wrong / undetermined, with the
  numbers, once per digit and once on whole sequences; the rule is in metrics.json.
- **Readout** (:mod:`interp.readout`): how often the digit the model outputs is the *plurality vote*
  (the digit with the largest total attention weight) and how often the heaviest single key's digit,
  at every point of every family, on adversarial queries (neighbours agreeing on one wrong digit:
  :mod:`interp.adversarial`'s isolated-digit inputs), and the logit margin of the right digit against
  the vote margin. Worst case: beam searches over digit placements for the smallest vote margin and the
  smallest logit margin the unintervened model reaches (< 0: an input it gets wrong).

Python: ``result = run(model)`` (a model or a checkpoint path); ``write_outputs(result, "out/tol")``;
``result.summary()``, ``result.to_dataframe()``. CLI: ``python -m analyses.tolerance``.
"""

from analyses.frame.command import Outputs
from analyses.tolerance.measure import run
from analyses.tolerance.result import ANALYSIS, CSV_FIELDS, DEFAULT_OUT, SCHEMA_VERSION, ToleranceResult

OUTPUTS = Outputs(ANALYSIS)
# Python API: metrics.json, metrics.csv, figures/ and report.html into a folder, all or nothing.
write_outputs = OUTPUTS.write
