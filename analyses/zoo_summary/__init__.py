"""Across seeds and architectures of a model zoo: flip mass, neighbour mass, zero-PE accuracy.

Reads a zoo folder written by ``python -m models.zoo`` (its ``zoo.json`` lists the grid; without one,
every finished run folder inside is used), loads each finished run's ``model.pt`` and evaluates it on
the same random sequences:

- accuracy, and accuracy with the positional encoding zeroed (``zero_pe_accuracy``; not for PE none);
- flip mass and neighbour mass (keys N−1−i ± 1, ± 2) of the *best head*, the (layer, head) with the
  largest flip mass;
- flip coverage, mean_i max_{layer, head} A[i, N−1−i]: whether *some* head reads the flipped key of
  every query (several heads can split the positions between them);

each with a bootstrap CI over sequences; plus the run's own training numbers (steps to 100% validation
accuracy, seconds). Per architecture: the mean over seeds with a t-interval, and the Welch interval of
the difference from a reference architecture (default sinusoidal, 1 layer, 1 head: the tutorial's).
See :mod:`analyses.zoo_summary.result` for the statistics.

The per-run evaluations run in this process or as Ray tasks, with the same numbers
(:mod:`analyses.zoo_summary.engine`; the CLI's default is Ray, like ``models.zoo.cli``'s).

Python: ``result = run("zoo/")`` (or ``run("zoo/", engine=SummaryEngine("ray"))``);
        ``write_outputs(result, "out/zoo")``.
CLI:    ``python -m analyses.zoo_summary ZOO_DIR [--out DIR] [--engine ray|sequential] [--address A] ...``
        (see ``--help``).
"""

from analyses.frame.command import Outputs
from analyses.zoo_summary.engine import SummaryEngine
from analyses.zoo_summary.measure import run
from analyses.zoo_summary.result import ANALYSIS, CSV_FIELDS, DEFAULT_OUT, SCHEMA_VERSION, ZooSummaryResult

OUTPUTS = Outputs(ANALYSIS, source="zoo")
# Python API: metrics.json, metrics.csv, figures/ and report.html into a folder, all or nothing.
write_outputs = OUTPUTS.write
