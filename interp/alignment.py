"""Comparing circuits of two trained runs: heads matched up to permutation, weights up to rotation.

Two seeds of one architecture may learn the same circuit with the heads in another order, and any
two runs write their residual stream in an arbitrary basis. So a comparison aligns first:

- heads: S[a, b] = :func:`pattern_similarity` of head a of run 1 and head b of run 2 (cosine of the
  mean patterns, ⟨A, B⟩_F / (‖A‖_F ‖B‖_F): 1 exactly when the patterns are equal, because every row
  sums to one); :func:`match_heads` is the permutation π maximising Σ_a S[a, π(a)] (Hungarian
  algorithm, ``scipy.optimize.linear_sum_assignment``); :func:`raw_similarity` is the same mean
  without alignment (head a against head a), :func:`aligned_similarity` after it;
- QK of positions: :func:`row_centred_cosine` of two score matrices after removing each query row's
  mean (the softmax ignores a constant per row): a function of positions, needing no basis;
- OV and representations live in the residual basis: :func:`procrustes_similarity` is the best
  agreement over orthogonal maps R, max_R ⟨X̂R, Ŷ⟩_F = ‖X̂ᵀŶ‖_* (nuclear norm; X̂, Ŷ centred over rows
  and scaled to unit Frobenius norm), 1 exactly when Y is a rotation (and scaling) of X;
  :func:`raw_cosine` is ⟨X̂, Ŷ⟩_F with the identity map (what comparing unaligned weights gives);
- :func:`linear_cka` (centred kernel alignment, ‖X̂ᵀŶ‖_F² / (‖X̂ᵀX̂‖_F ‖ŶᵀŶ‖_F)) is a representation
  similarity index, invariant to rotation and isotropic scaling. Caveat (stated wherever it is shown):
  CKA is dominated by the directions of largest variance, so it can be moved a lot by directions a
  model does not use, and left high while a low-variance direction the model does use is destroyed
  (Davari et al. 2022, "Reliability of CKA as a similarity measure"); it is shown next to the aligned
  alternative, never alone.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float

__all__ = [
    "aligned_similarity",
    "linear_cka",
    "match_heads",
    "pattern_similarity",
    "procrustes_similarity",
    "raw_cosine",
    "raw_similarity",
    "row_centred_cosine",
]


def _cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[h1, h2] cosines of the flattened items of a [h1, ...] and b [h2, ...] (0 for a zero item)."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"items of different sizes cannot be compared: {a.shape[1]} and {b.shape[1]}")
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (a @ b.T) / np.outer(na, nb)
    return np.nan_to_num(out, nan=0.0)


def pattern_similarity(
    a: Float[np.ndarray, "head_a query key"], b: Float[np.ndarray, "head_b query key"]
) -> Float[np.ndarray, "head_a head_b"]:
    """S[i, j] = ⟨A_i, B_j⟩_F / (‖A_i‖_F ‖B_j‖_F): cosine of the mean patterns of head i and head j.
    In [0, 1] for patterns (non-negative); 1 exactly when A_i = B_j (rows summing to one)."""
    return _cosine_matrix(a, b)


def row_centred_cosine(
    a: Float[np.ndarray, "head_a query key"], b: Float[np.ndarray, "head_b query key"]
) -> Float[np.ndarray, "head_a head_b"]:
    """Cosine of score matrices after subtracting each query row's mean over keys (what a softmax sees)."""
    a, b = (np.asarray(x, dtype=np.float64) for x in (a, b))
    return _cosine_matrix(a - a.mean(-1, keepdims=True), b - b.mean(-1, keepdims=True))


def match_heads(similarity: Float[np.ndarray, "head_a head_b"]) -> np.ndarray:
    """π with π[i] = the head of run b matched to head i of run a, maximising Σ_i S[i, π(i)] over
    one-to-one matchings (Hungarian algorithm); −1 for heads of a left unmatched when a has more."""
    from scipy.optimize import linear_sum_assignment

    similarity = np.asarray(similarity, dtype=np.float64)
    if similarity.ndim != 2 or not np.isfinite(similarity).all():
        raise ValueError(f"similarity must be a finite [head_a, head_b] matrix, got shape {similarity.shape}")
    rows, cols = linear_sum_assignment(similarity, maximize=True)
    perm = np.full(similarity.shape[0], -1, dtype=np.int64)
    perm[rows] = cols
    return perm


def aligned_similarity(similarity: np.ndarray, perm: np.ndarray) -> float:
    """Mean of S[i, π(i)] over the matched heads."""
    matched = [(i, j) for i, j in enumerate(perm) if j >= 0]
    return float(np.mean([similarity[i, j] for i, j in matched]))


def raw_similarity(similarity: np.ndarray) -> float:
    """Mean of S[i, i] (head i against head i, no alignment) over the first min(h_a, h_b) heads."""
    similarity = np.asarray(similarity, dtype=np.float64)
    return float(np.mean(np.diagonal(similarity)))


def _normalised(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a [rows, features] matrix, got shape {x.shape}")
    x = x - x.mean(0, keepdims=True)
    norm = np.linalg.norm(x)
    return x / norm if norm > 0 else x


def _check_rows(x: np.ndarray, y: np.ndarray) -> None:
    if np.shape(x)[0] != np.shape(y)[0]:
        raise ValueError(f"the two matrices need the same rows (inputs), got {np.shape(x)} and {np.shape(y)}")


def procrustes_similarity(x: Float[np.ndarray, "rows d_x"], y: Float[np.ndarray, "rows d_y"]) -> float:
    """max over R with orthonormal columns of ⟨X̂R, Ŷ⟩_F = ‖X̂ᵀŶ‖_* (sum of singular values), X̂ and Ŷ
    centred over rows and of unit Frobenius norm: in [0, 1], 1 exactly when Ŷ = X̂R (a rotation of X up
    to scale and offset)."""
    _check_rows(x, y)
    return float(np.linalg.svd(_normalised(x).T @ _normalised(y), compute_uv=False).sum())


def raw_cosine(x: Float[np.ndarray, "rows d"], y: Float[np.ndarray, "rows d"]) -> float:
    """⟨X̂, Ŷ⟩_F: the same comparison with the identity map (the two bases taken as the same)."""
    _check_rows(x, y)
    if np.shape(x) != np.shape(y):
        raise ValueError(f"raw comparison needs equal shapes, got {np.shape(x)} and {np.shape(y)}")
    return float((_normalised(x) * _normalised(y)).sum())


def linear_cka(x: Float[np.ndarray, "rows d_x"], y: Float[np.ndarray, "rows d_y"]) -> float:
    """Linear CKA = ‖X̂ᵀŶ‖_F² / (‖X̂ᵀX̂‖_F ‖ŶᵀŶ‖_F) (centred X̂, Ŷ): in [0, 1], invariant to rotations and
    isotropic scaling of either side (see the module docstring for its caveat)."""
    _check_rows(x, y)
    x, y = _normalised(x), _normalised(y)
    denominator = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(np.linalg.norm(x.T @ y) ** 2 / denominator) if denominator > 0 else float("nan")
