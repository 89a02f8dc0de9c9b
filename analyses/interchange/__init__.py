"""Does the network implement the reverse program, variable by variable? Interchange interventions.

High-level model: RASP's ``Aggregate(Select(indices, N−1−indices, EQ), tokens)`` (tracr's
``make_reverse``): output i is the variable V_i = t[N−1−i]. Interchanging V_i from a source sequence s
into a base b changes output i to s[N−1−i] and nothing else. Low-level candidates
(:mod:`interp.interchange`), each patched from the source run into the base run at one position:

- the head output ``blocks.l.attn.hook_z`` at query i (all heads, and each head alone), the attention
  output ``hook_attn_out`` and the residual after attention ``hook_resid_mid`` at i — aligned with
  output i;
- the residual before attention ``hook_resid_pre`` at key j — it carries t_j, read by output N−1−j
  (layer 0 only: a later layer's resid_pre is an earlier layer's output, no longer the input).

Interchange-intervention accuracy (IIA): the share of (pair, position) interchanges after which the
model's aligned output equals the program's; "whole" IIA asks every output to match. Sources differ
from their base at every position, so a site that carries nothing scores 0. CIs: percentile bootstrap
over pairs. The dependency matrix D[p, k] (patching position p changes output k) is compared with the
program's (anti-diagonal for resid_pre, diagonal for the output sites). Per head: which head carries
the aggregate — "the reverse selector lives in head h" is claimed only when its IIA CI lies above 0.5
and above every other head's. The conclusion (implements / partly / does not) and its rule are in
metrics.json.

Python: ``result = run(model)`` (a model or a checkpoint path); ``write_outputs(result, "out/iia")``;
``result.summary()``, ``result.to_dataframe()``. CLI: ``python -m analyses.interchange``.
"""

from analyses.frame.command import Outputs
from analyses.interchange.measure import run
from analyses.interchange.result import ANALYSIS, CSV_FIELDS, DEFAULT_OUT, SCHEMA_VERSION, InterchangeResult

OUTPUTS = Outputs(ANALYSIS)
# Python API: metrics.json, metrics.csv, figures/ and report.html into a folder, all or nothing.
write_outputs = OUTPUTS.write
