"""structops.torch on CUDA: every family's torch form equals the CPU result, and a training step runs.

Skipped unless ``torch.cuda.is_available()`` (the CPU-only CI and development machines skip it;
the device independence of the torch forms is checked everywhere on ``meta`` tensors in
tests/test_torch_forms.py).
"""

from __future__ import annotations

import numpy as np
import pytest

import structops

torch = pytest.importorskip("torch")
st = pytest.importorskip("structops.torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

from .test_torch_bridge import FAMILIES  # noqa: E402


@pytest.mark.parametrize("transpose", [False, True], ids=["K", "KT"])
@pytest.mark.parametrize("family", FAMILIES, ids=[f.name for f in FAMILIES])
def test_every_family_on_cuda_equals_the_cpu_in_value_and_gradients(family, transpose):
    k = family.build()
    rng = np.random.default_rng(0)
    x_shape = k.out_shape if transpose else k.in_shape
    theta = torch.tensor(k.random_theta(rng), requires_grad=True)
    x = torch.tensor(rng.standard_normal((3, *x_shape)), requires_grad=True)
    results = []
    for device in ("cpu", "cuda"):
        t, z = theta.detach().to(device).requires_grad_(), x.detach().to(device).requires_grad_()
        y = st.apply(k, t, z, transpose=transpose, backend="torch")
        gt, gz = torch.autograd.grad(y.square().sum(), (t, z))
        results.append([r.detach().cpu() for r in (y, gt, gz)])
    for cpu, cuda in zip(*results, strict=True):
        torch.testing.assert_close(cuda, cpu, rtol=1e-10, atol=1e-10 * max(1.0, float(cpu.abs().max())))


def test_a_training_step_runs_on_cuda_with_auto():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        st.Layer(structops.Conv((8, 8), 3, in_channels=2, out_channels=4), bias=True),
        torch.nn.ReLU(),
        st.Layer(structops.CayleyConv((8, 8), 3, channels=4)),
        torch.nn.Flatten(),
        torch.nn.Linear(256, 3),
    ).to("cuda")
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(5, 2, 8, 8, device="cuda"), torch.randint(0, 3, (5,), device="cuda")
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
