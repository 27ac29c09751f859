"""Helpers shared by several test modules (imported as ``from ._helpers import ...``)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from hypothesis import settings

from structops import Conv
from structops.testing import default_rtol


def examples(n: int) -> int:
    """``max_examples`` for a property test whose full budget is ``n``.

    Scaled by the loaded hypothesis profile (tests/conftest.py): ``n`` under the slow run, whose
    profile keeps hypothesis' default of 100 examples, and ``n / 5`` (at least 2) in the quick
    default run, whose profile draws 20.
    """
    return max(2, round(n * settings.default.max_examples / 100))


def atol_for(reference, dtype=np.float64, size: int | None = None, cond: float = 1.0) -> float:
    r"""Absolute tolerance for results of the scale of ``reference``, from the machine epsilon.

    :math:`\text{default\_rtol}(\text{dtype}, \text{size}) \cdot \text{cond} \cdot \max|\text{reference}|`:
    ``size`` is the number of terms summed (default: the larger dimension of ``reference``) and
    ``cond`` the condition number that amplifies round-off (of a solve, an inverse, an eigenproblem).
    """
    ref = np.asarray(reference)
    n = max(ref.shape, default=1) if size is None else size
    scale = float(np.abs(ref).max(initial=0.0)) or 1.0
    return default_rtol(dtype, n) * float(cond) * scale


class ConvCase(NamedTuple):
    """The geometry of a convolution: grid, stencil, channels in and out, stride."""

    grid: tuple[int, ...]
    stencil: tuple[int, ...]
    cin: int
    cout: int
    stride: tuple[int, ...]

    def kernel(self, bc: str, method: str = "auto") -> Conv:
        return Conv(
            self.grid,
            self.stencil,
            bc=bc,
            in_channels=self.cin,
            out_channels=self.cout,
            stride=self.stride,
            method=method,
        )
