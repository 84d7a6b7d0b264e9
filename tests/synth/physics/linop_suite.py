"""The property suite every linear operator passes (STYLE 2; after sigpy's check_linop_adjoint)."""

import numpy as np


def _rand(rng, shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def check_adjoint(op, rng, rtol=1e-4):
    """<A x, y> == <x, A^H y> with explicit shape checks."""
    x = _rand(rng, op.ishape)
    y = _rand(rng, op.oshape)
    ax = op(x)
    ahy = op.H(y)
    assert ax.shape == op.oshape, (op, ax.shape)
    assert ahy.shape == op.ishape, (op, ahy.shape)
    lhs = np.vdot(y.astype(np.complex128), ax.astype(np.complex128))
    rhs = np.vdot(ahy.astype(np.complex128), x.astype(np.complex128))
    assert abs(lhs - rhs) <= rtol * max(abs(lhs), 1e-12), (op, lhs, rhs)


def check_linearity(op, rng, rtol=1e-4):
    x1, x2 = _rand(rng, op.ishape), _rand(rng, op.ishape)
    a = np.complex64(0.7 - 1.3j)
    lhs = op(a * x1 + x2)
    rhs = a * op(x1) + op(x2)
    assert np.linalg.norm(lhs - rhs) <= rtol * np.linalg.norm(rhs), op
