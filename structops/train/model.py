r"""The lecture notes' single parametric layer followed by a linear softmax classifier.

.. math::
    A = K(\theta)\,y_i + b, \qquad Z = \sigma(A), \qquad S = Z W + c, \qquad
    E = \frac{1}{n}\sum_{i=1}^n \Bigl(\log\sum_k e^{S_{ik}} - S_{i, y_i}\Bigr)
      + \frac{\alpha_\theta}{2}\|\theta\|^2 + \frac{\alpha_W}{2}\|W\|_F^2,

the lecture notes' :math:`E(\sigma(YK(\theta) + b)W, C)` with examples as rows. The gradient with
respect to :math:`\theta` is the chain rule through the family's Jacobian,
:math:`\nabla_\theta E = J_\theta^\top \bigl(\sigma'(A) \odot (G_S W^\top)\bigr)` with
:math:`G_S = (\operatorname{softmax}(S) - C)/n`, computed by ``kernel.jac(theta, Y).H`` --
the same code for every family, no automatic differentiation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse.linalg as spla

from .._validation import FLOAT_DTYPES, check_choice, check_number, check_positive_int
from ..kernels._base import ParametricKernel
from ..kernels.compose import Chain
from ..solvers.lipschitz import certified_norm_bound, project_spectral_norm

__all__ = ["ACTIVATIONS", "BIAS_MODES", "LayerClassifier", "Params", "certified_layer_norm", "lipschitz_family"]

#: Supported activations :math:`\sigma`.
ACTIVATIONS = ("relu", "tanh", "identity")
#: Supported layouts of the layer bias :math:`b`.
BIAS_MODES = ("channel", "scalar")


@dataclass
class Params:
    r"""Parameters of a :class:`LayerClassifier`.

    Attributes
    ----------
    theta : numpy.ndarray, shape (p,)
        Parameters of the kernel family :math:`K(\theta)`.
    bias : numpy.ndarray, shape (nbias,)
        Layer bias :math:`b` (one per output channel, or one scalar).
    W : numpy.ndarray, shape (nfeatures, nclasses)
        Classifier weights.
    c : numpy.ndarray, shape (nclasses,)
        Classifier bias.
    """

    theta: np.ndarray
    bias: np.ndarray
    W: np.ndarray
    c: np.ndarray

    def ravel(self) -> np.ndarray:
        """All parameters in one vector ``[theta, bias, vec_C(W), c]`` (``W`` in C order)."""
        return np.concatenate([self.theta.ravel(), self.bias.ravel(), self.W.ravel(), self.c.ravel()])

    def copy(self) -> Params:
        """A deep copy."""
        return Params(self.theta.copy(), self.bias.copy(), self.W.copy(), self.c.copy())

    @property
    def dtype(self) -> np.dtype:
        """The floating dtype of the parameters."""
        return self.theta.dtype


def _softmax_inplace(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row softmax of ``S`` written over ``S``, and the row log-sum-exp (shifted by the row maximum: no overflow)."""
    smax = S.max(axis=1, keepdims=True)
    S -= smax
    np.exp(S, out=S)
    tot = S.sum(axis=1, keepdims=True)
    S /= tot
    return S, (np.log(tot) + smax)[:, 0]


class LayerClassifier:
    r"""One parametric layer :math:`Z = \sigma(K(\theta)y + b)` and a softmax classifier :math:`ZW + c`.

    Parameters
    ----------
    kernel : ParametricKernel
        Any family of the library; examples have shape ``kernel.in_shape`` (batches may be
        given as ``(n, *in_shape)`` or flattened ``(n, prod(in_shape))``).
    nclasses : int
        Number of classes.
    activation : {"relu", "tanh", "identity"}, optional
        The element-wise :math:`\sigma`.
    bias : {"channel", "scalar"}, optional
        Layout of :math:`b`. ``"channel"``: one bias per entry of the first axis of
        ``kernel.out_shape``, shared over the other axes -- one per output channel for a
        ``Conv`` output ``(channels, *grid)``, one per feature for a matrix family's
        ``(rows,)``. ``"scalar"``: the lecture notes' single :math:`b \in \mathbb{R}`.
    reg_theta, reg_W : float, optional
        Tikhonov weights :math:`\alpha_\theta, \alpha_W \ge 0`.

    Notes
    -----
    The layer output :math:`Z` of each example (shape ``kernel.out_shape``, e.g. several
    channels) is flattened in C order to ``nfeatures = prod(out_shape)`` entries before
    :math:`W`. Everything runs in the dtype of the parameters (float32 or float64).

    Gradient (with :math:`P = \operatorname{softmax}(S)`, :math:`C` the one-hot labels):

    .. math::
        G_S = (P - C)/n,\quad \nabla_W E = Z^\top G_S + \alpha_W W,\quad \nabla_c E = G_S^\top \mathbf 1,
        \quad G_A = \sigma'(A) \odot (G_S W^\top),\quad
        \nabla_b E = \textstyle\sum_{\text{examples, grid}} G_A,\quad
        \nabla_\theta E = J_\theta^\top G_A + \alpha_\theta\theta.

    Examples
    --------
    >>> from structops import Diagonal
    >>> model = LayerClassifier(Diagonal(4), nclasses=3)
    >>> X = np.arange(8.0).reshape(2, 4); y = np.array([0, 2])
    >>> params = model.init_params(X, rng=0)
    >>> model.forward(params, X).shape, model.nparams
    ((2, 3), 23)
    """

    def __init__(
        self,
        kernel: ParametricKernel,
        nclasses: int,
        *,
        activation: str = "relu",
        bias: str = "channel",
        reg_theta: float = 0.0,
        reg_W: float = 0.0,
        lipschitz: float | None = None,
    ) -> None:
        if not isinstance(kernel, ParametricKernel):
            raise TypeError(f"`kernel` must be a ParametricKernel, got {kernel!r}.")
        self.kernel = kernel
        self.nclasses = check_positive_int(nclasses, "nclasses", minimum=2)
        self.activation = check_choice(activation, "activation", ACTIVATIONS)
        self.bias_mode = check_choice(bias, "bias", BIAS_MODES)
        self.reg_theta = check_number(reg_theta, "reg_theta", minimum=0)
        self.reg_W = check_number(reg_W, "reg_W", minimum=0)
        self.lipschitz = None if lipschitz is None else check_number(lipschitz, "lipschitz", above=0)
        if self.lipschitz is not None:
            family = lipschitz_family(kernel)
            if not family.linear or family.q is not None:
                raise ValueError(
                    f"`lipschitz` needs a family linear in θ (conv, symmetric, mmatrixconv, ...), got {family!r}."
                )
        self.nfeatures = int(np.prod(kernel.out_shape))
        self.nbias = kernel.out_shape[0] if bias == "channel" and kernel.out_shape else 1
        self.sizes = (kernel.nparams, self.nbias, self.nfeatures * self.nclasses, self.nclasses)
        self.nparams = int(sum(self.sizes))

    def __repr__(self) -> str:
        return (
            f"LayerClassifier({self.kernel!r}, nclasses={self.nclasses}, activation={self.activation!r}, "
            f"bias={self.bias_mode!r}, reg_theta={self.reg_theta}, reg_W={self.reg_W})"
        )

    # ------------------------------------------------------------ parameters
    def unpack(self, vec: np.ndarray) -> Params:
        """Split a vector ``[theta, bias, vec_C(W), c]`` into :class:`Params` (views, no copy)."""
        vec = np.asarray(vec)
        if vec.ndim != 1 or vec.shape[0] != self.nparams:
            raise ValueError(f"`vec` must be a vector of length {self.nparams}, got shape {vec.shape}.")
        parts = np.split(vec, np.cumsum(self.sizes)[:-1])
        return Params(parts[0], parts[1], parts[2].reshape(self.nfeatures, self.nclasses), parts[3])

    def as_params(self, params) -> Params:
        """``params`` as :class:`Params`, checked against the model's shapes (a packed vector is unpacked to views).

        Raises
        ------
        TypeError
            If the parameters are not float32 or float64.
        ValueError
            If a part has the wrong shape or a dtype other than that of ``theta``.
        """
        if isinstance(params, Params):
            p = params
        else:
            p = self.unpack(np.asarray(params))
        if p.theta.dtype not in FLOAT_DTYPES:
            raise TypeError(f"`params` must be float32 or float64, got {p.theta.dtype}.")
        shapes = ((self.kernel.nparams,), (self.nbias,), (self.nfeatures, self.nclasses), (self.nclasses,))
        for name, arr, shape in zip(("theta", "bias", "W", "c"), (p.theta, p.bias, p.W, p.c), shapes):
            if arr.shape != shape or arr.dtype != p.theta.dtype:
                raise ValueError(
                    f"`params.{name}` must have shape {shape} and dtype {p.theta.dtype}, "
                    f"got shape {arr.shape} and dtype {arr.dtype}."
                )
        return p

    def bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Bounds on the parameter vector from ``kernel.bounds`` (None if unconstrained)."""
        kb = self.kernel.bounds
        if kb is None:
            return None
        lo = np.full(self.nparams, -np.inf)
        hi = np.full(self.nparams, np.inf)
        lo[: self.kernel.nparams], hi[: self.kernel.nparams] = kb
        return lo, hi

    def project(self, x: np.ndarray) -> np.ndarray:
        r"""Project the parameters ``x`` onto the bounds, then :math:`\|K(\theta)\|_2 \le` ``lipschitz``.

        The box of :meth:`bounds` is a clip; the norm bound is
        :func:`structops.solvers.project_spectral_norm` on the layer's family (before its
        pooling, whose norm is at most 1), certified. The identity when neither applies.
        """
        b = self.bounds()
        if b is not None:
            x = np.clip(x, b[0].astype(x.dtype, copy=False), b[1].astype(x.dtype, copy=False))
        if self.lipschitz is None:
            return x
        x = x.copy()
        theta = self.unpack(x).theta
        theta[...] = project_spectral_norm(lipschitz_family(self.kernel), theta, self.lipschitz)
        return x

    def init_params(self, X, rng: np.random.Generator | int | None = None, dtype=None) -> Params:
        r"""Random initial parameters, scaled to the data.

        ``theta`` is drawn by ``kernel.random_theta``; for families homogeneous in
        :math:`\theta` (affine with no offset ``q``) it is rescaled so that the
        pre-activations :math:`K(\theta)y_i` of (up to 256 of) the examples ``X`` have unit
        root-mean-square, which keeps every family in the active range of :math:`\sigma`.
        ``W`` is normal with variance ``1 / nfeatures``; ``c`` starts at zero and ``b`` at zero,
        or at 0.1 for ReLU so that pre-activations of blank image regions (exactly zero, where
        ReLU has its kink) start in the active part.

        Parameters
        ----------
        X : array_like, shape (n, *in_shape)
            Training examples (only used for the scale).
        rng : numpy.random.Generator or int, optional
        dtype : float32 or float64, optional
            Default: the dtype of ``X`` (float64 for integer input).
        """
        rng = np.random.default_rng(rng)
        X = np.asarray(X)
        dt = np.dtype(dtype) if dtype is not None else (X.dtype if X.dtype in FLOAT_DTYPES else np.dtype(np.float64))
        if dt not in FLOAT_DTYPES:
            raise TypeError(f"`dtype` must be float32 or float64, got {dtype!r}.")
        theta = self.kernel.random_theta(rng, dt)
        if self.kernel.linear and self.kernel.q is None and X.shape[0]:
            sample = X[:256].reshape(min(X.shape[0], 256), -1).astype(dt)
            rms = float(np.sqrt(np.mean(self.kernel.apply(theta, sample).astype(np.float64) ** 2)))
            if rms > 0 and np.isfinite(rms):
                theta = (theta / rms).astype(dt)
        W = (rng.standard_normal((self.nfeatures, self.nclasses)) / np.sqrt(self.nfeatures)).astype(dt)
        b0 = 0.1 if self.activation == "relu" else 0.0
        return Params(theta, np.full(self.nbias, b0, dt), W, np.zeros(self.nclasses, dt))

    # --------------------------------------------------------------- forward
    def _batch(self, X, dtype: np.dtype) -> np.ndarray:
        X = np.asarray(X)
        if X.dtype.kind in "iu":
            X = X.astype(dtype)
        if X.dtype != dtype:
            raise TypeError(f"`X` has dtype {X.dtype} but the parameters are {dtype}; pass both in the same precision.")
        if X.ndim < 1 or X.size != X.shape[0] * self.kernel.shape[1]:
            raise ValueError(
                f"`X` must hold examples of shape {self.kernel.in_shape} along its first axis, got shape {X.shape}."
            )
        return X.reshape(X.shape[0], self.kernel.shape[1])

    def _activations(self, p: Params, X: np.ndarray) -> np.ndarray:
        r"""The layer output :math:`Z = \sigma(K(\theta)x_i + b)`, shape ``(n, nbias, rest)``.

        One buffer: the kernel's output receives the bias and the activation in place, and
        :math:`A` is not kept -- :math:`\sigma'(A)` is read off :math:`Z` (:meth:`_dsigma_times`).
        """
        A = self.kernel.apply(p.theta, X)
        if not A.flags.writeable or not A.flags.c_contiguous or np.may_share_memory(A, X):
            A = np.array(A, dtype=p.dtype, order="C")  # e.g. a family that returns its input
        Z = A.reshape(X.shape[0], self.nbias, -1)
        Z += p.bias[None, :, None]
        if self.activation == "relu":
            np.maximum(Z, 0, out=Z)
        elif self.activation == "tanh":
            np.tanh(Z, out=Z)
        return Z

    def _dsigma_times(self, G: np.ndarray, Z: np.ndarray) -> np.ndarray:
        r"""``G`` times :math:`\sigma'(A)` in place, with :math:`\sigma'` expressed through :math:`Z = \sigma(A)`.

        ReLU: :math:`\sigma'(A) = [Z > 0]` (0 at the kink); tanh: :math:`1 - Z^2`; identity: 1.
        """
        if self.activation == "relu":
            G *= Z > 0
        elif self.activation == "tanh":
            G *= 1 - Z * Z
        return G

    def _dsigma(self, Z: np.ndarray) -> np.ndarray | None:
        r""":math:`\sigma'(A)` as an array in the dtype of ``Z`` (None for the identity)."""
        if self.activation == "relu":
            return (Z > 0).astype(Z.dtype)
        if self.activation == "tanh":
            return 1 - Z * Z
        return None

    def features(self, params, X) -> np.ndarray:
        r"""The layer output :math:`Z = \sigma(K(\theta)y_i + b)`, flattened to ``(n, nfeatures)``."""
        p = self.as_params(params)
        X = self._batch(X, p.dtype)
        return self._activations(p, X).reshape(X.shape[0], -1)

    def forward(self, params, X) -> np.ndarray:
        """Class scores (logits) :math:`S = ZW + c`, shape ``(n, nclasses)``."""
        p = self.as_params(params)
        S = self.features(p, X) @ p.W
        S += p.c
        return S

    def predict(self, params, X) -> np.ndarray:
        """Predicted classes, shape ``(n,)``."""
        return np.argmax(self.forward(params, X), axis=1)

    def accuracy(self, params, X, y) -> float:
        """Fraction of examples whose predicted class is ``y``."""
        y = self._labels(y, np.asarray(X).shape[0])
        return float(np.mean(self.predict(params, X) == y)) if y.size else float("nan")

    def evaluate(self, params, X, y, *, chunk: int = 1024) -> tuple[float, float]:
        """The objective :math:`E` and the accuracy on ``(X, y)`` from one forward pass.

        The examples are processed ``chunk`` at a time, so the memory held is that of one
        chunk's layer output, whatever the number of examples.

        Returns
        -------
        loss : float
            As :meth:`loss` (NaN or Inf when the parameters overflow).
        accuracy : float
            As :meth:`accuracy` (NaN for no examples).
        """
        p = self.as_params(params)
        X = self._batch(X, p.dtype)
        n = X.shape[0]
        y = self._labels(y, n)
        check_positive_int(chunk, "chunk")
        data_sum, correct = 0.0, 0
        with np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, n, chunk):
                Xc, yc = X[start : start + chunk], y[start : start + chunk]
                S = self._activations(p, Xc).reshape(Xc.shape[0], -1) @ p.W
                S += p.c
                correct += int(np.count_nonzero(np.argmax(S, axis=1) == yc))
                rows = np.arange(Xc.shape[0])
                Sy = S[rows, yc]
                _, lse = _softmax_inplace(S)
                data_sum += float(np.sum(lse - Sy, dtype=np.float64))
            loss = data_sum / max(n, 1) + float(self._regulariser(p))
        return loss, (correct / n if n else float("nan"))

    def _labels(self, y, n: int) -> np.ndarray:
        y = np.asarray(y)
        if y.shape != (n,) or y.dtype.kind not in "iu":
            raise ValueError(f"`y` must be {n} integer class labels (shape ({n},)), got shape {y.shape} of {y.dtype}.")
        if n and (y.min() < 0 or y.max() >= self.nclasses):
            raise ValueError(f"`y` must hold classes in 0..{self.nclasses - 1}, got range {y.min()}..{y.max()}.")
        return y.astype(np.int64, copy=False)

    # ------------------------------------------------------------ objective
    def _regulariser(self, p: Params):
        dt = p.dtype.type
        w = p.W.ravel()
        return dt(0.5 * self.reg_theta) * (p.theta @ p.theta) + dt(0.5 * self.reg_W) * (w @ w)

    def loss(self, params, X, y) -> float:
        """The objective :math:`E` (mean cross-entropy plus Tikhonov terms), in the parameters' dtype."""
        return self.loss_and_gradient_vector(params, X, y, need_gradient=False)[0]

    def gradient(self, params, X, y) -> Params:
        r"""The gradient of :math:`E` with respect to :math:`(\theta, b, W, c)`."""
        grad = self.loss_and_gradient(params, X, y)[1]
        assert grad is not None  # need_gradient=True
        return grad

    def loss_and_gradient(self, params, X, y, need_gradient: bool = True) -> tuple[float, Params | None]:
        """The objective and (unless ``need_gradient`` is False) its gradient, sharing the forward pass.

        Parameters
        ----------
        params : Params or numpy.ndarray
            Parameters (or the packed vector ``Params.ravel()``).
        X : array_like, shape (n, *in_shape) or (n, prod(in_shape))
            Examples, same dtype as the parameters.
        y : array_like of int, shape (n,)
            Class labels.

        Returns
        -------
        loss : numpy floating scalar
            NaN or Inf when the parameters overflow (callers check it; no warning is raised).
        grad : Params or None
            Views into one packed vector (see :meth:`loss_and_gradient_vector`).
        """
        loss, g = self.loss_and_gradient_vector(params, X, y, need_gradient)
        return loss, (None if g is None else self.unpack(g))

    def loss_and_gradient_vector(self, params, X, y, need_gradient: bool = True) -> tuple[float, np.ndarray | None]:
        """As :meth:`loss_and_gradient`, with the gradient packed like ``Params.ravel()``.

        What the optimisers call: the parts of the gradient are written straight into one
        vector of the parameters' dtype, without concatenating copies. Everything runs in the
        parameters' dtype (float32 stays float32).
        """
        p = self.as_params(params)
        X = self._batch(X, p.dtype)
        n = X.shape[0]
        y = self._labels(y, n)
        dt = p.dtype.type
        rows = np.arange(n)
        with np.errstate(over="ignore", invalid="ignore"):
            Z = self._activations(p, X)
            Zf = Z.reshape(n, -1)
            S = Zf @ p.W
            S += p.c
            Sy = S[rows, y]
            P, lse = _softmax_inplace(S)  # S is P from here on
            data_term = (lse - Sy).sum(dtype=p.dtype) / dt(max(n, 1))
            loss = dt(data_term + self._regulariser(p))
            if not need_gradient:
                return loss, None
            grad = np.empty(self.nparams, dtype=p.dtype)
            g = self.unpack(grad)
            GS = P
            GS[rows, y] -= 1
            GS *= dt(1.0 / max(n, 1))
            np.matmul(Zf.T, GS, out=g.W)
            if self.reg_W:
                g.W += dt(self.reg_W) * p.W
            GS.sum(axis=0, out=g.c)
            GA = self._dsigma_times((GS @ p.W.T).reshape(Z.shape), Z)
            GA.sum(axis=(0, 2), out=g.bias)
            g.theta[...] = self.kernel.jac(p.theta, X).rmatvec(GA.reshape(-1))
            if self.reg_theta:
                g.theta += dt(self.reg_theta) * p.theta
        return loss, grad

    # --------------------------------------------------------- Gauss-Newton
    def gauss_newton(self, params, X, y, damping: float = 0.0) -> spla.LinearOperator:
        r"""The Gauss--Newton matrix :math:`J_S^\top H J_S + R + \lambda I` as a scipy ``LinearOperator``.

        :math:`J_S` is the Jacobian of the logits :math:`S` with respect to all parameters
        ``[theta, bias, vec_C(W), c]``, built from ``kernel.jac`` (forward and adjoint);
        :math:`H = \operatorname{blockdiag}_i(\operatorname{diag}(p_i) - p_i p_i^\top)/n` is the
        Hessian of the mean cross-entropy in :math:`S`; :math:`R` the Tikhonov terms and
        :math:`\lambda` = ``damping``. It is symmetric positive semi-definite (definite for
        :math:`\lambda > 0`), so ``scipy.sparse.linalg.cg`` or ``minres`` solve with it.

        Notes
        -----
        .. math::
            J_S v = \bigl(\sigma'(A) \odot (J_\theta v_\theta + v_b)\bigr) W + Z v_W + \mathbf 1 v_c^\top,

        and :math:`J_S^\top` is the chain rule of :meth:`loss_and_gradient` with
        :math:`G_S` replaced by the given matrix.
        """
        p = self.as_params(params)
        X = self._batch(X, p.dtype)
        n = X.shape[0]
        self._labels(y, n)
        dt = p.dtype
        Z = self._activations(p, X)
        D = self._dsigma(Z)  # built once: every product below reuses it, as it reuses J
        Zf = Z.reshape(n, -1)
        S = Zf @ p.W
        S += p.c
        P, _ = _softmax_inplace(S)
        J = self.kernel.jac(p.theta, X)
        scale = dt.type(1.0 / max(n, 1))
        lam = dt.type(damping)
        reg_theta, reg_W = dt.type(self.reg_theta), dt.type(self.reg_W)

        def matvec(v):
            v = np.asarray(v).ravel().astype(dt, copy=False)
            q = self.unpack(v)
            dA = J.matvec(q.theta).reshape(Z.shape)
            dA += q.bias[None, :, None]
            if D is not None:
                dA *= D
            dS = dA.reshape(n, -1) @ p.W
            dS += Zf @ q.W
            dS += q.c
            dS *= P
            HdS = dS - P * np.sum(dS, axis=1, keepdims=True)
            HdS *= scale
            GA = (HdS @ p.W.T).reshape(Z.shape)
            if D is not None:
                GA *= D
            out = np.empty(self.nparams, dtype=dt)
            o = self.unpack(out)
            o.theta[...] = J.rmatvec(GA.reshape(-1))
            o.theta += reg_theta * q.theta
            GA.sum(axis=(0, 2), out=o.bias)
            np.matmul(Zf.T, HdS, out=o.W)
            o.W += reg_W * q.W
            HdS.sum(axis=0, out=o.c)
            out += lam * v
            return out

        return spla.LinearOperator((self.nparams, self.nparams), matvec=matvec, rmatvec=matvec, dtype=dt)


def lipschitz_family(kernel: ParametricKernel) -> ParametricKernel:
    """The family whose norm ``lipschitz`` bounds: the layer before its pooling (a ``Chain``'s inner family)."""
    return kernel.kernel if isinstance(kernel, Chain) else kernel


def certified_layer_norm(kernel: ParametricKernel, theta: np.ndarray) -> float:
    """A certified upper bound on the norm ``lipschitz`` controls (:func:`~structops.solvers.certified_norm_bound`)."""
    return certified_norm_bound(lipschitz_family(kernel), theta)
