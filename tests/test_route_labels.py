"""Route labels say what produced the upper bound: route(...), spectral_norm's result and certify's table agree.

Reference: the float64 dense SVD of ``kernel.matrix`` (the bounds must bracket it).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import structops
import structops.solvers._certified as certified
from structops.solvers import EstimateWarning, certified_norm_bound, route, spectral_norm

torch = pytest.importorskip("torch")
st = pytest.importorskip("structops.torch")


def _estimate(kernel, theta, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimateWarning)  # the certified bracket is wider than tol=1e-6
        return spectral_norm(kernel, theta, full_output=True, **options)


@pytest.mark.parametrize("bc", ["reflect", "replicate"])
def test_reflect_and_replicate_take_the_verified_route_everywhere(bc, rng):
    kernel = structops.Conv((12, 12), (3, 3), bc=bc, in_channels=2, out_channels=2)
    theta = kernel.random_theta(rng)
    truth = np.linalg.norm(kernel.matrix(theta), 2)
    r = route(kernel, theta, "spectral_norm", dense_limit=0)
    assert r.name == "verified-cholesky" and "verified positive definiteness" in r.reason
    est = _estimate(kernel, theta, dense_limit=0)
    assert est.method == r.name and est.certified and not est.exact
    assert est.lower <= truth <= est.upper <= certified_norm_bound(kernel, theta, dense_limit=0)
    assert est.upper <= truth * 1.01  # verified PD at the Lanczos value: tight
    projection = route(kernel, theta, "project_spectral_norm", dense_limit=0)
    assert projection.name == "verified-cholesky" and truth <= projection.norm_bound()
    # a zero-boundary layer keeps the embedding's route; with the embedding refused, only an estimate
    zero = structops.Conv((12, 12), (3, 3), in_channels=2, out_channels=2)
    assert _estimate(zero, theta, dense_limit=0).method == route(zero, theta, "spectral_norm", dense_limit=0).name
    assert route(kernel, theta, "spectral_norm", dense_limit=0, embedding=False).name == "estimate"


def test_above_the_factorisations_limit_the_result_says_padded(monkeypatch, rng):
    kernel = structops.Conv((10, 10), (3, 3), bc="reflect", in_channels=2, out_channels=2)
    theta = kernel.random_theta(rng)
    truth = np.linalg.norm(kernel.matrix(theta), 2)
    monkeypatch.setattr(certified, "verified_norm", lambda *args, **kwargs: None)  # as when too costly
    est = _estimate(kernel, theta, dense_limit=0)
    assert est.method == "padded" and est.certified and est.lower <= truth <= est.upper
    assert certified.norm_upper(kernel, theta, dense_limit=0)[1] == "padded"


def test_certify_names_the_route_of_each_upper_bound(rng):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect"),  # 3·24·30 = 2160 > DENSE_LIMIT
        torch.nn.ReLU(),
        torch.nn.Conv2d(3, 2, 3, padding=1, padding_mode="circular"),
    ).double()
    report = st.certify(model.eval(), (3, 24, 30))
    reflect, relu, circular = report.rows
    layer = st.from_module(model[0], (3, 24, 30))
    est = _estimate(layer.kernel, layer.theta.detach().numpy())
    assert reflect.route == est.method == "verified-cholesky" and reflect.upper == est.upper
    assert reflect.lower <= reflect.upper <= reflect.lower * 1.01
    assert relu.route == "1-Lipschitz" and circular.route == "fourier"
    assert "verified-cholesky" in str(report)
