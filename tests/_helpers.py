"""Helpers shared by several test modules (imported as ``from ._helpers import ...``)."""

from __future__ import annotations

from typing import NamedTuple

from structops import Conv


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
