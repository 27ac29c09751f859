"""Certify the Lipschitz constant of a small CNN, project it to 1-Lipschitz, and certify it again.

A small convolutional network is trained for a few steps on the shipped 8x8 digits
(:func:`structops.train.load_digits`); :func:`structops.torch.certify` then prints, layer by
layer, the certified upper bound of each layer's spectral norm (BatchNorm folded into the
convolution before it), a guaranteed lower bound and their ratio, and the network's certified
ℓ2 Lipschitz bound next to the largest ‖J(x)‖₂ measured at a few test digits. Every
convolution is then converted to a :class:`structops.torch.Layer`
(:func:`structops.torch.from_module`) and projected to spectral norm at most 1
(``Layer.project_(lipschitz=1.0)``, certified), and the network is certified again: its
bound is now at most 1 (the ReLU and average pooling do not increase it).

Run with ``python examples/certify_model.py [--quick]``.
"""

from __future__ import annotations

import argparse

import torch

import structops.torch as st
from structops.train import load_digits

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="fewer training steps (for the tests)")
args = parser.parse_args()

torch.manual_seed(0)
data = load_digits()
x_train = torch.from_numpy(data.x_train).float()
y_train = torch.from_numpy(data.y_train).long()
x_test = torch.from_numpy(data.x_test[:4]).float()

model = torch.nn.Sequential(
    torch.nn.Conv2d(1, 8, 3, padding=1),
    torch.nn.BatchNorm2d(8),
    torch.nn.ReLU(),
    torch.nn.Conv2d(8, 8, 3, padding=1, stride=2),
    torch.nn.ReLU(),
    torch.nn.AvgPool2d(2),
    torch.nn.Flatten(),
    torch.nn.Linear(8 * 2 * 2, 10),
)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
steps = 20 if args.quick else 200
for _step in range(steps):
    batch = torch.randint(0, x_train.shape[0], (64,))
    loss = torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
model.eval()
print(f"trained {steps} steps, last loss {loss.item():.3f}")

report = st.certify(model, (1, 8, 8), inputs=x_test)
print("\n== trained network ==")
print(report)

# every linear layer as a structops Layer (BatchNorm folded into the first convolution's
# stencil and bias), projected to spectral norm <= 1
bn = model[1]
scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
with torch.no_grad():
    folded = torch.nn.Conv2d(1, 8, 3, padding=1)
    folded.weight.copy_(model[0].weight * scale[:, None, None, None])
    folded.bias.copy_((model[0].bias - bn.running_mean) * scale + bn.bias)
shapes = [(1, 8, 8), (8, 8, 8)]
layers = [st.from_module(m, s) for m, s in zip([folded, model[3]], shapes)] + [st.from_module(model[7])]
for layer in layers:
    layer.project_(lipschitz=1.0)
projected = torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1], torch.nn.ReLU(), torch.nn.AvgPool2d(2),
                                torch.nn.Flatten(), layers[2]).eval()  # fmt: skip
after = st.certify(projected, (1, 8, 8), inputs=x_test)
print("\n== projected to 1-Lipschitz layers ==")
print(after)
accuracy = (projected(torch.from_numpy(data.x_test).float()).argmax(1).numpy() == data.y_test).mean()
print(f"\ncertified bound {report.upper:.4g} -> {after.upper:.4g} (<= 1: {after.upper <= 1.0}); "
      f"test accuracy after projection {accuracy:.3f}")  # fmt: skip
