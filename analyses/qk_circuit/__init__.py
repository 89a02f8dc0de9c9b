"""Why does the model attend to the flipped key and its neighbours? The positional QK circuit.

The tutorial explains the spread onto keys N−1−i±1 by "the positional encodings of nearby positions
are similar". This analysis tests that sentence with numbers, on layer 0 (whose input is exactly
token embedding + positional encoding in the tutorial's post-LayerNorm model):

1. **Decomposition** — layer 0's scores split exactly (``interp.circuits``) into position–position,
   token–position, position–token, token–token and bias terms; the largest |Σ terms − hook_attn_scores|
   is recorded. Each term's share of the *within-row* variance of the scores (the only variance the
   softmax sees): share_t = Σ c̃_t·S̃ / Σ S̃², with S̃, c̃_t centred over the keys of each query row;
   the shares sum to 1 (a term can have a negative share when it works against the others).
2. **Prediction from positions** — softmax(mean score) = softmax(pos_pos + mean of the token and bias
   terms), softmax(pos_pos) alone, and the tutorial's sentence taken literally: attention ∝
   exp(β · cos(PE_{N−1−i}, PE_j)) with the best β; each against the observed mean pattern (Jensen–
   Shannon divergence per query row in bits, flip and neighbour mass).
3. **Similarity** — cosine similarity of the raw encodings, of the keys P W_K and of query vs key
   (P W_Q, P W_K), by offset from the flipped key and by (query, key) pair; Spearman ρ against the
   attention; the score gap S[i, f(i)] − S[i, f(i)+d] per term (exp(gap) is the attention ratio of
   the flipped key to its neighbour for that query) and the QK gain |q_i||k_f(i)|/√d_head.
4. **Output side** — swap the digit at key N−1−i+o (o = 0, ±1, ±2) and measure how often the
   prediction at i follows the new digit or changes at all (``interp.circuits.swap_effect``).
5. **Several layers** — attention rollout (``interp.rollout``) as an extra view.

Every mean carries a percentile-bootstrap CI over whole sequences (for more than ``MAX_UNITS``
sequences, over ``MAX_UNITS`` fixed blocks of consecutive sequences, which keeps memory constant).
Quantities of the weights alone (encoding similarities, singular values, QK gain) have no sampling
error and no CI.

Python: ``result = run(model, num_sequences=2000)`` (a model or a checkpoint path);
``write_outputs(result, "out/qk")``; ``result.summary()``, ``result.to_dataframe()``.
CLI:    ``python -m analyses.qk_circuit [--checkpoint PATH] [--out DIR] ...`` (see ``--help``).
"""

from analyses.frame.command import Outputs
from analyses.qk_circuit.measure import run
from analyses.qk_circuit.result import ANALYSIS, CSV_FIELDS, DEFAULT_OUT, SCHEMA_VERSION, QKCircuitResult

OUTPUTS = Outputs(ANALYSIS)
# Python API: metrics.json, metrics.csv, figures/ and report.html into a folder, all or nothing.
write_outputs = OUTPUTS.write
