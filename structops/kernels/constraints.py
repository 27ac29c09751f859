r"""Constraints on :math:`\theta` that families share: :class:`Nonnegative` (the M-matrix families)."""

from __future__ import annotations

import numpy as np

__all__ = ["Nonnegative"]


class Nonnegative:
    r"""Mixin for families whose parameters must satisfy :math:`\theta \ge 0` (M-matrix couplings).

    Provides :attr:`bounds` (zero below, infinite above; bound-constrained optimisers and
    :meth:`~structops.kernels.ParametricKernel.random_theta` use them) and the check that every public
    entry point runs. A family sets ``_reparametrise``, the expression a user should write to
    optimise without the constraint (e.g. ``"structops.Softplus(MMatrix(n))"``).
    """

    nparams: int
    _reparametrise: str = "structops.Softplus(kernel)"

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``θ ≥ 0``: lower bounds zero, upper bounds infinite."""
        return np.zeros(self.nparams), np.full(self.nparams, np.inf)

    def _check_constraints(self, theta: np.ndarray) -> None:
        if theta.size and theta.min() < 0:
            k = int(np.argmin(theta))
            raise ValueError(
                f"`theta` must be >= 0 for {self!r} (an M-matrix needs nonnegative couplings), "
                f"got theta[{k}] = {theta[k].item()!r}; reparametrise with {self._reparametrise} "
                "or optimise with bounds=kernel.bounds."
            )
