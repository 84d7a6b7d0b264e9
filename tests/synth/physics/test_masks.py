"""Tests of synth.physics.masks: dynamic ky-row undersampling masks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synth.errors import ConfigError
from synth.physics.masks import KINDS, acs_rows, row_mask, rows_per_frame, vd_density
from synth.physics.sms import kz_table


@st.composite
def mask_args(draw):
    ny = draw(st.integers(1, 80))
    return dict(
        kind=draw(st.sampled_from(KINDS)),
        n_frames=draw(st.integers(1, 12)),
        ny=ny,
        accel=draw(st.integers(1, ny)),
        acs=draw(st.integers(0, ny)),
        rng=np.random.default_rng(draw(st.integers(0, 2**32 - 1))),
    )


@settings(max_examples=40, deadline=None)
@given(args=mask_args())
def test_shape_acs_and_row_budget(args):
    m = row_mask(**args)
    t, ny, r, acs = args["n_frames"], args["ny"], args["accel"], args["acs"]
    assert m.shape == (t, ny) and m.dtype == bool
    assert m[:, acs_rows(ny, acs)].all()
    assert m[:, acs_rows(ny, acs)].shape[1] == acs
    per_frame = m.sum(1)
    if args["kind"] in ("random", "vd"):
        assert (per_frame == max(rows_per_frame(ny, r), acs)).all()
    else:
        assert (per_frame >= max(ny // r, acs)).all()
        assert (per_frame <= -(-ny // r) + acs).all()


def test_acs_is_centred_on_the_dc_row():
    for ny, acs in [(31, 1), (31, 8), (32, 8), (37, 7)]:
        rows = np.arange(ny)[acs_rows(ny, acs)]
        assert ny // 2 in rows
        assert rows.size == acs and np.all(np.diff(rows) == 1)
        assert abs((rows[0] + rows[-1]) / 2 - ny // 2) <= 0.5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("ny,r", [(224, 2), (224, 4), (37, 3), (31, 5)])
def test_acceleration_achieved(kind, ny, r):
    m = row_mask(kind, 20, ny, r, 8, np.random.default_rng(0))
    # uniform: the lattice plus the ACS rows off it; random/vd: the budget, floored at the ACS
    expected = ny / r + 8 * (r - 1) / r if kind == "uniform" else max(ny / r, 8)
    assert abs(m.sum(1).mean() - expected) <= 1.5


@pytest.mark.parametrize("kind", KINDS)
def test_r1_samples_everything(kind):
    assert row_mask(kind, 5, 37, 1, 0, np.random.default_rng(0)).all()
    assert row_mask(kind, 5, 37, 1, 8, np.random.default_rng(0)).all()


def test_uniform_is_a_lattice_shifted_by_one_row_per_frame():
    t, ny, r, acs = 9, 37, 3, 6
    m = row_mask("uniform", t, ny, r, acs, np.random.default_rng(4))
    outside = np.ones(ny, bool)
    outside[acs_rows(ny, acs)] = False
    offsets = set()
    for f in range(t):
        rows = np.flatnonzero(m[f] & outside)
        residues = set((rows - f) % r)
        assert len(residues) == 1  # every R-th row, offset (o + t) mod R
        offsets |= residues
        expected = np.zeros(ny, bool)
        expected[(next(iter(residues)) + f) % r :: r] = True
        np.testing.assert_array_equal(m[f] & outside, expected & outside)
    assert len(offsets) == 1
    # R consecutive frames together sample every row
    assert m[:r].any(0).all()


def test_uniform_initial_offset_comes_from_the_generator():
    firsts = {int(np.argmax(row_mask("uniform", 1, 40, 4, 0, np.random.default_rng(s))[0])) for s in range(40)}
    assert firsts == {0, 1, 2, 3}


def test_random_varies_per_frame_and_is_uniform_outside_acs():
    t, ny, r, acs = 2000, 40, 4, 6
    m = row_mask("random", t, ny, r, acs, np.random.default_rng(0))
    assert len({row.tobytes() for row in m[:10]}) == 10
    outside = np.ones(ny, bool)
    outside[acs_rows(ny, acs)] = False
    k = rows_per_frame(ny, r) - acs
    freq = m[:, outside].mean(0)
    np.testing.assert_allclose(freq, k / outside.sum(), atol=0.05)


def test_random_acs_larger_than_budget_keeps_acs_only():
    m = row_mask("random", 3, 32, 8, 10, np.random.default_rng(0))
    assert (m.sum(1) == 10).all()
    assert m[:, acs_rows(32, 10)].all()


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_by_seed(kind):
    a = row_mask(kind, 8, 37, 3, 4, np.random.default_rng(9))
    b = row_mask(kind, 8, 37, 3, 4, np.random.default_rng(9))
    np.testing.assert_array_equal(a, b)


def test_vd_density_is_crnn_mri_gaussian_plus_floor():
    ny, r = 96, 4
    d = vd_density(ny, r)
    n = np.arange(ny)
    # CRNN-MRI: normal_pdf(N, 0.5/(N/10)**2) + lmda/N, lmda = N/(2 acc), centred on the DC row
    np.testing.assert_allclose(d, np.exp(-0.5 / (ny / 10) ** 2 * (n - ny // 2) ** 2) + 1 / (2 * r))
    assert d.argmax() == ny // 2 and d.min() > 1 / (2 * r)


@pytest.mark.parametrize("ny,r,acs", [(96, 4, 8), (37, 3, 5)])
def test_vd_draws_rows_without_replacement_by_the_density(ny, r, acs):
    """Inclusion frequencies match sequential weighted draws without replacement (what CRNN-MRI's
    ``np.random.choice(replace=False, p=pdf)`` does), drawn anew per frame."""
    t = 6000
    m = row_mask("vd", t, ny, r, acs, np.random.default_rng(1))
    assert len({row.tobytes() for row in m[:20]}) == 20  # anew per frame
    assert m[:, acs_rows(ny, acs)].all()
    outside = np.ones(ny, bool)
    outside[acs_rows(ny, acs)] = False
    rows = np.flatnonzero(outside)
    w = vd_density(ny, r)[outside]
    k = rows_per_frame(ny, r) - acs
    ref_rng = np.random.default_rng(2)
    ref = np.zeros(ny)
    for _ in range(t):
        ref[ref_rng.choice(rows, size=k, replace=False, p=w / w.sum())] += 1
    freq = m[:, outside].mean(0)
    np.testing.assert_allclose(freq, ref[outside] / t, atol=0.03)
    # denser near the centre than at the edges
    assert freq[np.argmin(np.abs(rows - ny // 2))] > 2 * freq[0]


@pytest.mark.parametrize("ny,r,m", [(96, 2, 2), (96, 4, 3), (224, 2, 2), (224, 4, 2), (224, 4, 3)])
def test_vd_spreads_each_frame_over_the_kz_planes(ny, r, m):
    """Unlike uniform sampling with R a multiple of M, a vd frame puts sampled rows on every kz
    plane under either CAIPI ordering: within a few rows of an even split for ``row`` (kz = n mod
    M, a random split), within one row for ``acquired`` (kz cycles over the acquired rows)."""
    mask = row_mask("vd", 200, ny, r, 8, np.random.default_rng(ny + r + m))
    k = mask.sum(1)
    for order in ("row", "acquired"):
        kz = kz_table(order, mask, m)
        counts = np.stack([(mask & (kz == z)).sum(1) for z in range(m)], axis=1)  # (T, M)
        dev = np.abs(counts - k[:, None] / m).max(1)
        if order == "acquired":
            assert (counts.max(1) - counts.min(1) <= 1).all()
        else:
            # measured (2000 frames, seed 1): mean 1.3-3.9 rows, worst frame 5-12 rows of 24-112
            assert dev.mean() <= 0.5 * np.sqrt(k.mean()), dev.mean()
            assert dev.max() <= 1.5 * np.sqrt(k.mean()), dev.max()
    # the uniform lattice with R = M under the row ordering: every non-ACS row on one kz plane
    uni = row_mask("uniform", 4, ny, m, 0, np.random.default_rng(0))
    kz = kz_table("row", uni, m)
    assert all(len(set(kz[f][uni[f]])) == 1 for f in range(4))
    acq = kz_table("acquired", uni, m)
    counts = np.stack([(uni & (acq == z)).sum(1) for z in range(m)], axis=1)
    assert (counts.max(1) - counts.min(1) <= 1).all()


def test_errors_name_the_option():
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="--accel"):
        row_mask("uniform", 4, 16, 17, 0, rng)
    with pytest.raises(ConfigError, match="--accel"):
        row_mask("random", 4, 16, 0, 0, rng)
    with pytest.raises(ConfigError, match="--acs"):
        row_mask("uniform", 4, 16, 2, 17, rng)
    with pytest.raises(ConfigError, match="--acs"):
        row_mask("uniform", 4, 16, 2, -1, rng)
    with pytest.raises(ConfigError, match="--mask"):
        row_mask("poisson", 4, 16, 2, 4, rng)
    with pytest.raises(ConfigError, match="--frames"):
        row_mask("uniform", 0, 16, 2, 4, rng)
    with pytest.raises(TypeError, match="Generator"):
        row_mask("uniform", 4, 16, 2, 4, 0)
