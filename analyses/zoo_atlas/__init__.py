"""A mechanism atlas of a model zoo: do all seeds learn the tutorial's circuit, and which recipe gives 57%?

Reads one or more zoo folders written by ``python -m models.zoo`` (e.g. one per recipe: ``--preset fast``
and ``--preset tutorial``) and, for every finished run, measures the cheap mechanism scalars the toolkit
already has (:mod:`analyses.zoo_atlas.measure`: flip and neighbour mass, spill width, argmax hit rate,
position share of layer 0's score variance, β, zero-PE accuracy, IIA of z and the selector head, and
which queries each head serves), classifies the run by a stated rule
(:mod:`analyses.zoo_atlas.classes`), and summarises each *cell* — one architecture (PE × layers × heads
× width) trained with one recipe — over its seeds: the share of runs per class with a Wilson interval
(the phase diagram), every scalar's mean with a t-interval, and the differences between recipes of one
architecture with Welch intervals. Circuits are compared across runs after alignment
(:mod:`analyses.zoo_atlas.compare`: heads matched by the Hungarian algorithm, weights by orthogonal
Procrustes), raw numbers next to aligned ones; linear CKA only with its caveat. With ``--dynamics``, every
run trained with snapshots gets ``analyses.training_dynamics`` and the pointer-before-weight order is
reported over seeds (:mod:`analyses.zoo_atlas.dynamics`).

Python: ``result = run(["zoo_fast", "zoo_tutorial"])``; ``write_outputs(result, "out/atlas")``.
CLI:    ``python -m analyses.zoo_atlas ZOO [ZOO ...] [--out DIR] [--dynamics] ...`` (see ``--help``).
"""

from analyses.frame.command import Outputs
from analyses.zoo_atlas.measure import run
from analyses.zoo_atlas.result import ANALYSIS, CSV_FIELDS, DEFAULT_OUT, SCHEMA_VERSION, ZooAtlasResult

__all__ = [
    "ANALYSIS",
    "CSV_FIELDS",
    "DEFAULT_OUT",
    "OUTPUTS",
    "SCHEMA_VERSION",
    "ZooAtlasResult",
    "run",
    "write_outputs",
]

OUTPUTS = Outputs(ANALYSIS, source="zoos")
# Python API: metrics.json, metrics.csv, figures/ and report.html into a folder, all or nothing.
write_outputs = OUTPUTS.write
