"""pgsl_ext: fast PyTorch ops for Proximal Gradient Split Learning (PGSL).

Importing the package loads the compiled library, which registers the ops under
``torch.ops.pgsl_ext``. Use them through :mod:`pgsl_ext.ops` (typed wrappers with
autograd and fake kernels); :mod:`pgsl_ext.reference` holds the plain-PyTorch
definitions they are tested against; :mod:`pgsl_ext.attacks` the attacks built on the ops
(the batched JSMA).
"""

import torch  # noqa: F401  (loads libtorch before the extension)

from . import _C
from . import attacks, ops, reference

__version__ = "0.1.0"
__all__ = ["attacks", "build_info", "ops", "reference", "__version__"]


def build_info() -> dict:
    """What this build holds.

    Returns a dict with ``cuda`` (bool: CUDA kernels compiled), ``cuda_version`` and
    ``cuda_arch_list`` (str, or None without CUDA), ``openmp`` (bool), ``torch_version``
    (the torch the extension was compiled against) and ``cxx_standard``.
    """
    return dict(_C.build_info())
