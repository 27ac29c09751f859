"""ConvGeometry: the one geometry object every convolution family builds, validated once."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from structops import (
    AntisymmetricConv,
    CayleyConv,
    Conv,
    DepthwiseSeparableConv,
    MMatrixConv,
    SeparableConv,
    SymmetricConv,
)
from structops.kernels.conv import ConvGeometry
from structops.kernels.conv import _core as core

# every family with the arguments it needs besides the geometry (full paths: no per-pass Convs)
FAMILIES = {
    "conv": lambda **g: Conv(**g),
    "symmetric": lambda **g: SymmetricConv(**g),
    "separable": lambda **g: SeparableConv(**g, path="full"),
    "depthwise": lambda **g: DepthwiseSeparableConv(**g, path="full"),
    "mmatrix": lambda grid, stencil, bc="zero", in_channels=1, out_channels=1, stride=1: MMatrixConv(
        grid, stencil, bc=bc, channels=in_channels
    ),
    "antisymmetric": lambda grid, stencil, bc="zero", in_channels=1, out_channels=1, stride=1: AntisymmetricConv(
        grid, stencil, bc=bc, channels=in_channels
    ),
    "cayley": lambda grid, stencil, bc="periodic", in_channels=1, out_channels=1, stride=1: CayleyConv(
        grid, stencil, channels=in_channels
    ),
}
#: Families with one channel count, no stride and boundaries of their own (they refuse or ignore the others).
SQUARE = ("mmatrix", "antisymmetric", "cayley")

GOOD = {"grid": (7, 6), "stencil": (3, 3), "bc": "periodic", "in_channels": 2, "out_channels": 2}


def test_a_geometry_normalises_its_arguments_and_derives_the_padding():
    geo = ConvGeometry(8, 3, stride=2, bc="zero", cin=1, cout=4)
    assert (geo.grid, geo.stencil, geo.stride, geo.cin, geo.cout) == ((8,), (3,), (2,), 1, 4)
    assert geo.pads == ((1, 1),) and geo.out_grid == (4,)
    assert ConvGeometry((5, 6), (3, 1)) == ConvGeometry([5, 6], [3, 1], 1, "zero", 1, 1)
    assert hash(ConvGeometry((5, 6), 3)) == hash(ConvGeometry((5, 6), (3, 3)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        geo.bc = "periodic"  # type: ignore[misc]


BAD = [
    ({"grid": (4, 4, 4, 4)}, ValueError, "`grid` must have 1, 2 or 3 axes"),
    ({"grid": (0, 4)}, ValueError, "`grid`"),
    ({"grid": (4.0, 4)}, TypeError, "`grid` must hold integers"),
    ({"stencil": (3, 3, 3)}, ValueError, "`stencil` must have 2 entries"),
    ({"stride": (1, 0)}, ValueError, "`stride`"),
    ({"bc": "mirror"}, ValueError, "`bc` must be one of"),
    ({"in_channels": 0}, ValueError, "`(in_)?channels`"),  # MMatrixConv: `channels`
    ({"bc": "valid", "stencil": (9, 3)}, ValueError, "bc='valid' needs stencil <= grid"),
    ({"bc": "reflect", "stencil": (15, 3)}, ValueError, "reflect padding needs"),
]


@pytest.mark.parametrize(("change", "error", "message"), BAD, ids=[str(c) for c, _, _ in BAD])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_reports_a_bad_geometry_naming_the_argument(family, change, error, message):
    if family in SQUARE and ("stride" in change or change.get("bc") in ("valid", "mirror", "reflect")):
        pytest.skip(f"{family} has no stride and refuses (or ignores) this bc with its own message")
    with pytest.raises(error, match=message):
        FAMILIES[family](**{**GOOD, **change})
    if family == "conv":
        geo = {**GOOD, **change}
        with pytest.raises(error, match=message):
            ConvGeometry(geo["grid"], geo["stencil"], geo.get("stride", 1), geo["bc"], geo["in_channels"], 2)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_validates_its_geometry_once_and_shares_it(family, monkeypatch):
    calls = []
    real = core.check_geometry

    def counted(grid, stencil):
        calls.append((grid, stencil))
        return real(grid, stencil)

    monkeypatch.setattr(core, "check_geometry", counted)
    k = FAMILIES[family](**GOOD)
    assert len(calls) == 1, calls
    assert isinstance(k.geometry, ConvGeometry)
    assert k.geometry == ConvGeometry((7, 6), (3, 3), 1, "periodic", 2, 2)
    assert (k.grid, k.stencil, k.bc, k.stride) == ((7, 6), (3, 3), "periodic", (1, 1))


def test_conv_from_a_geometry_is_the_conv_of_its_arguments():
    geo = ConvGeometry((6, 5), (3, 2), (2, 1), "reflect", 2, 3)
    k = Conv.from_geometry(geo, method="direct")
    ref = Conv((6, 5), (3, 2), bc="reflect", in_channels=2, out_channels=3, stride=(2, 1), method="direct")
    assert k.geometry is geo and repr(k) == repr(ref)
    theta = ref.random_theta(0)
    np.testing.assert_array_equal(k.matrix(theta), ref.matrix(theta))
    with pytest.raises(TypeError, match="`geometry` must be a ConvGeometry"):
        Conv.from_geometry(((6, 5), (3, 2)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`method`"):
        Conv.from_geometry(geo, method="winograd")
