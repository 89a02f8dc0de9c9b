"""Which positional information does the encoder use? Ablate the positional encoding and measure.

Conditions (each a transform of the encoding P added at ``hook_pos_embed``, see
:func:`interp.ablation.positional_transform`): ``none``; ``zero`` (the tutorial's
``add_positional_encoding=False``); ``mean`` over positions; ``shuffle_s<k>`` (a random permutation of
the rows, seed k) and their average ``shuffle``; ``shift_+1`` / ``shift_-1`` (position i gets PE(i ± 1));
``mirror`` (i gets PE(N − 1 − i)); ``scale_<α>`` (αP); ``band_<k>`` (sin/cos pair k removed). For each:
accuracy, loss, logit difference, per-position accuracy, the share of predictions equal to the token at
N − 1 − i + d (d = −2..2: which input the output copies), flip mass of every head, and the change
from ``none`` — means with 95% percentile-bootstrap CIs over sequences (one set of resamples for all,
so differences are paired).

Reference lines: chance 1/C and the best accuracy without positional information
(:mod:`interp.baselines`: exact sum over partitions, checked by Monte Carlo).

Python: ``result = run(model)`` (a model or a checkpoint path); ``write_outputs(result, "out/pe")``;
``result.summary()``, ``result.to_dataframe()``. CLI: ``python -m analyses.pe_ablation``.
"""

from analyses.frame.command import Outputs
from analyses.pe_ablation.measure import run
from analyses.pe_ablation.result import ANALYSIS, CSV_FIELDS, DEFAULT_OUT, SCHEMA_VERSION, PEAblationResult

OUTPUTS = Outputs(ANALYSIS)
# Python API: metrics.json, metrics.csv, figures/ and report.html into a folder, all or nothing.
write_outputs = OUTPUTS.write
