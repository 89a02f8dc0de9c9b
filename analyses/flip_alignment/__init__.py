"""How well does each attention head align with the flip, and where does the rest of its mass go?

For query i the reverse task must read key f(i) = N − 1 − i. Over a stream of random sequences this
analysis measures, for every layer and head: the flip mass A[i, f(i)], the mass at offsets
d = −3..3 (key = f(i) + d), the neighbour mass (d = ±1, ±2) and the remainder, the argmax hit rate,
the row entropy (0 for a permutation, log N for uniform), the flip mass per query position, and
whether neighbour keys that happen to hold the target digit get more weight than other neighbours;
plus accuracy and loss. Every mean carries a 95% percentile-bootstrap CI over whole sequences.

Python: ``result = run(model, num_sequences=10_000)`` (a model or a checkpoint path);
``write_outputs(result, "out/flip")``; ``result.summary()``, ``result.to_dataframe()``.
CLI:    ``python -m analyses.flip_alignment [--checkpoint PATH] [--out DIR] ...`` (see ``--help``).
"""

from analyses.flip_alignment.measure import run
from analyses.flip_alignment.result import (
    ANALYSIS,
    CSV_FIELDS,
    DEFAULT_OUT,
    SCHEMA_VERSION,
    FlipAlignmentResult,
)
from analyses.frame.command import Outputs

OUTPUTS = Outputs(ANALYSIS)
# Python API: metrics.json, metrics.csv, figures/ and report.html into a folder, all or nothing.
write_outputs = OUTPUTS.write
