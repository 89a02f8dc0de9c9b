"""Does a model trained on sequences of length N_train reverse sequences of another length N′?

For each evaluation length N′ (default 8, 12, 16, 20, 24, 32) this analysis streams random sequences
of length N′ through the model and measures accuracy (per digit, per sequence, per position) and,
for every attention head, *which* key query i reads:

- the **task key** N′ − 1 − i, the position the reverse task needs at this length, or
- the **learned key** N_train − 1 − i (15 − i for the tutorial), the absolute position the model
  was trained to read — it exists only for the queries with 0 ≤ N_train − 1 − i < N′.

Both as attention mass (mean over queries, per sequence), the task mass also on exactly the queries
where the learned key exists, and their paired difference; plus the share of predictions that copy
t[N_train − 1 − i]. Every mean carries a 95% percentile-bootstrap CI over whole sequences.

A learned positional encoding has rows for positions 0..N_train − 1 only (and the sinusoidal table
``pe_max_len``): longer lengths are skipped with the reason recorded, not run.

Python: ``result = run(model, lengths=(8, 16, 24))`` (a model or a checkpoint path);
``write_outputs(result, "out/lengths")``; ``result.summary()``, ``result.to_dataframe()``.
CLI:    ``python -m analyses.length_generalisation [--checkpoint PATH] [--lengths 8,12,16] ...``.
"""

from analyses.frame.command import Outputs
from analyses.length_generalisation.measure import run
from analyses.length_generalisation.result import (
    ANALYSIS,
    CSV_FIELDS,
    DEFAULT_OUT,
    SCHEMA_VERSION,
    LengthGeneralisationResult,
)

OUTPUTS = Outputs(ANALYSIS)
# Python API: metrics.json, metrics.csv, figures/ and report.html into a folder, all or nothing.
write_outputs = OUTPUTS.write
