"""Result types shared by the ops (:mod:`pgsl_ext.ops`) and their references
(:mod:`pgsl_ext.reference`), so that both return the same thing."""

from typing import NamedTuple

from torch import Tensor

__all__ = ["RPCAResult"]


class RPCAResult(NamedTuple):
    """Result of ``rpca``.

    Attributes:
        low_rank (Tensor[..., m, n]): L.
        sparse (Tensor[..., m, n]): S.
        iterations (Tensor[...], int64): iterations run per matrix.
        converged (Tensor[...], bool): whether the matrix met ``tol`` within ``max_iter``.
    """

    low_rank: Tensor
    sparse: Tensor
    iterations: Tensor
    converged: Tensor
