"""Which heads does the reversal need, and does it need *their attention pattern*?

1. Head ablations: every (layer, head) × {zero, mean over the dataset, resample from other sequences}
   of ``blocks.l.attn.hook_z`` (:func:`interp.ablation.ablate_heads`). Δaccuracy, Δloss and Δlogit
   difference (correct logit − best other) against the clean run, with paired 95% bootstrap CIs, and a
   Wilcoxon signed-rank test on per-sequence loss, Holm-corrected across heads × methods.
2. Pattern interventions on ``hook_pattern`` (:mod:`interp.patterns`): the perfect flip (one-hot at
   N−1−i), the flip shifted by ±1, uniform, ``permutations`` random row permutations (Jain & Wallace's
   "attention is not explanation" test: same weights, other keys; each on the first
   ``permutation_sequences`` sequences, 1,000 by default) and temperatures τ.
3. Activation patching with ``transformer_lens.patching`` (see :mod:`analyses.head_ablation.patching`).

Python: ``result = run(model)`` (a model or a checkpoint path; ``progress=False`` hides TransformerLens'
bars); ``write_outputs(result, "out/heads")``; ``result.summary()``, ``result.to_dataframe()``.
CLI:    ``python -m analyses.head_ablation [--checkpoint PATH] [--out DIR] ...`` (see ``--help``).
"""

from analyses.frame.command import Outputs
from analyses.head_ablation.measure import run
from analyses.head_ablation.result import (
    ANALYSIS,
    CSV_FIELDS,
    DEFAULT_OUT,
    SCHEMA_VERSION,
    HeadAblationResult,
)

OUTPUTS = Outputs(ANALYSIS)
# Python API: metrics.json, metrics.csv, figures/ and report.html into a folder, all or nothing.
write_outputs = OUTPUTS.write
