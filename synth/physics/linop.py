"""Small linear operators with forward and adjoint (numpy), in the spirit of ``sigpy.linop``.

An operator maps arrays of shape ``ishape`` to ``oshape``.  ``A.H`` is the adjoint, ``A * B``
the composition (apply ``B`` first).  Every operator here passes the property suite in
``tests/synth/physics/linop_suite.py`` (dot-product adjoint test with shape checks, linearity).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from synth.physics.fft import fft2c, ifft2c


class Linop:
    """A linear map ``ishape -> oshape`` with an adjoint.

    Subclasses implement ``_apply`` and ``_adjoint``.
    """

    def __init__(self, oshape: Sequence[int], ishape: Sequence[int]):
        self.oshape = tuple(int(s) for s in oshape)
        self.ishape = tuple(int(s) for s in ishape)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if tuple(x.shape) != self.ishape:
            raise ValueError(f"{type(self).__name__}: input shape {x.shape}, expected {self.ishape}")
        return self._apply(x)

    def _apply(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def _adjoint(self, y):  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def H(self) -> "Linop":
        return _Adjoint(self)

    def __mul__(self, other: "Linop") -> "Linop":
        if not isinstance(other, Linop):
            return NotImplemented
        return Compose(self, other)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.ishape} -> {self.oshape}>"


class _Adjoint(Linop):
    def __init__(self, op: Linop):
        self.op = op
        super().__init__(op.ishape, op.oshape)

    def _apply(self, y):
        return self.op._adjoint(y)

    def _adjoint(self, x):
        return self.op._apply(x)

    @property
    def H(self) -> Linop:
        return self.op


class Compose(Linop):
    """``(A * B)(x) = A(B(x))``."""

    def __init__(self, a: Linop, b: Linop):
        if a.ishape != b.oshape:
            raise ValueError(f"cannot compose {a!r} after {b!r}: shapes {a.ishape} != {b.oshape}")
        self.a, self.b = a, b
        super().__init__(a.oshape, b.ishape)

    def _apply(self, x):
        return self.a(self.b(x))

    def _adjoint(self, y):
        return self.b.H(self.a.H(y))


class FFT2c(Linop):
    """Centred orthonormal 2D FFT over the last two axes (see :mod:`synth.physics.fft`)."""

    def __init__(self, shape: Sequence[int]):
        super().__init__(shape, shape)

    def _apply(self, x):
        return fft2c(x)

    def _adjoint(self, y):
        return ifft2c(y)


class Multiply(Linop):
    """Pointwise multiplication by ``weights`` broadcast against the input.

    Output shape is ``np.broadcast_shapes(weights.shape, ishape)``; the adjoint multiplies by
    ``conj(weights)`` and sums over the broadcast axes.
    """

    def __init__(self, ishape: Sequence[int], weights: np.ndarray):
        self.weights = weights
        oshape = np.broadcast_shapes(tuple(ishape), weights.shape)
        super().__init__(oshape, ishape)

    def _apply(self, x):
        return self.weights * x

    def _adjoint(self, y):
        out = np.conj(self.weights) * y
        # sum over leading axes that broadcasting added, then over axes where the input had size 1
        lead = out.ndim - len(self.ishape)
        if lead:
            out = out.sum(axis=tuple(range(lead)))
        keep = tuple(i for i, s in enumerate(self.ishape) if s == 1 and out.shape[i] != 1)
        if keep:
            out = out.sum(axis=keep, keepdims=True)
        return out


class Sense(Linop):
    """Coil expansion: ``x (M, T, Y, X) -> S x (C, M, T, Y, X)`` with ``S = csm[:, :, None]``.

    ``csm`` is complex (C, M, Y, X).  The adjoint is the coil combination ``sum_c conj(S_c) y_c``.
    """

    def __init__(self, csm: np.ndarray, n_frames: int):
        self.csm = csm[:, :, None]
        c, m, ny, nx = csm.shape
        super().__init__((c, m, n_frames, ny, nx), (m, n_frames, ny, nx))

    def _apply(self, x):
        return self.csm * x[None]

    def _adjoint(self, y):
        return (np.conj(self.csm) * y).sum(axis=0)
