"""Properties of the pure tensor ops in multimix.functional."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from conftest import gen
from multimix import functional as MF

alphas = st.sampled_from([0.05, 0.2, 0.5, 1.0, 2.0, 7.5])


def random_soft_targets(b: int, k: int, g: torch.Generator) -> torch.Tensor:
    return torch.softmax(torch.randn(b, k, generator=g) * 3, dim=1)


# -- one_hot ------------------------------------------------------------------------------------


def test_one_hot_matches_labels_and_smoothing():
    y = torch.tensor([0, 2, 1, 2])
    t = MF.one_hot(y, 3)
    assert t.dtype == torch.get_default_dtype()
    assert torch.equal(t.argmax(1), y)
    assert torch.equal(t.sum(1), torch.ones(4))
    s = MF.one_hot(y, 3, smoothing=0.3)
    assert torch.allclose(s.sum(1), torch.ones(4))
    assert torch.allclose(s[0], torch.tensor([0.8, 0.1, 0.1]))


def test_one_hot_passes_soft_targets_through():
    soft = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    assert torch.equal(MF.one_hot(soft, 2), soft)
    assert torch.equal(MF.one_hot(soft, None), soft)


# -- samplers -----------------------------------------------------------------------------------


@given(n=st.integers(1, 64), m=st.integers(1, 40), alpha=alphas, seed=st.integers(0, 2**31))
def test_dirichlet_rows_on_simplex(n, m, alpha, seed):
    w = MF.sample_dirichlet(n, m, alpha, generator=gen(seed))
    assert w.shape == (n, m)
    assert torch.isfinite(w).all()
    assert (w >= 0).all()
    assert torch.allclose(w.sum(1), torch.ones(n), atol=1e-5)


@pytest.mark.parametrize("alpha", [0.3, 1.0, 4.0])
def test_dirichlet_moments(alpha):
    # Symmetric Dirichlet(α·1_m): mean 1/m, variance (1/m)(1 - 1/m) / (mα + 1).
    m, n = 4, 200_000
    w = MF.sample_dirichlet(n, m, alpha, generator=gen(1), dtype=torch.float64)
    var = (1 / m) * (1 - 1 / m) / (m * alpha + 1)
    se_mean = math.sqrt(var / n)
    assert torch.allclose(w.mean(0), torch.full((m,), 1 / m, dtype=torch.float64), atol=5 * se_mean)
    assert abs(w.var(0).mean().item() - var) < 0.02 * var


@pytest.mark.parametrize("alpha", [0.2, 1.0, 3.0])
def test_beta_moments(alpha):
    lam = MF.sample_beta(200_000, alpha, generator=gen(2), dtype=torch.float64)
    var = 1 / (4 * (2 * alpha + 1))  # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
    assert abs(lam.mean().item() - 0.5) < 5 * math.sqrt(var / lam.numel())
    assert abs(lam.var().item() - var) < 0.02 * var
    assert ((lam >= 0) & (lam <= 1)).all()


def test_beta_tiny_and_zero_alpha_never_nan():
    lam = MF.sample_beta(10_000, 1e-4, generator=gen(3))
    assert torch.isfinite(lam).all()
    # Almost all mass at the endpoints, both endpoints used.
    assert ((lam < 1e-3) | (lam > 1 - 1e-3)).float().mean() > 0.99
    per_example = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 2.0])
    lam = MF.sample_beta((2_000, 6), per_example, generator=gen(4))
    assert torch.isfinite(lam).all()
    assert set(lam[:, :4].unique().tolist()) == {0.0, 1.0}
    assert 0.4 < lam[:, 0].mean().item() < 0.6


def test_samplers_deterministic_under_seed():
    assert torch.equal(
        MF.sample_dirichlet(8, 5, 0.7, generator=gen(5)),
        MF.sample_dirichlet(8, 5, 0.7, generator=gen(5)),
    )
    assert torch.equal(
        MF.sample_beta(9, 0.4, generator=gen(5)), MF.sample_beta(9, 0.4, generator=gen(5))
    )
    assert not torch.equal(
        MF.sample_beta(9, 0.4, generator=gen(5)), MF.sample_beta(9, 0.4, generator=gen(6))
    )


# -- pairwise mixup -----------------------------------------------------------------------------


@given(b=st.integers(1, 17), per_sample=st.booleans(), alpha=alphas, seed=st.integers(0, 2**31))
def test_mixup_is_convex_and_targets_sum_to_one(b, per_sample, alpha, seed):
    g = gen(seed)
    x = torch.randn(b, 3, 5, generator=g)
    y = random_soft_targets(b, 4, g)
    lam, perm = MF.sample_mixup(b, alpha=alpha, per_sample=per_sample, generator=gen(seed))
    xm, ym = MF.mixup(x, y, alpha=alpha, per_sample=per_sample, generator=gen(seed))
    assert xm.shape == x.shape and ym.shape == y.shape
    assert torch.equal(torch.sort(perm).values, torch.arange(b))
    assert per_sample or torch.all(lam == lam[0])
    expected = lam.view(-1, 1, 1) * x + (1 - lam.view(-1, 1, 1)) * x[perm]
    assert torch.allclose(xm, expected, atol=1e-5)
    assert torch.allclose(ym.sum(1), torch.ones(b), atol=1e-5)


def test_mixup_of_identical_rows_is_identity():
    x = torch.randn(1, 7).expand(9, 7).contiguous()
    y = torch.tensor([[0.2, 0.8]]).expand(9, 2).contiguous()
    xm, ym = MF.mixup(x, y, alpha=0.4, per_sample=True, generator=gen(0))
    assert torch.allclose(xm, x, atol=1e-6) and torch.allclose(ym, y, atol=1e-6)


def test_mixup_single_example_is_identity():
    x, y = torch.randn(1, 3), torch.tensor([[0.0, 1.0]])
    xm, ym = MF.mixup(x, y, alpha=1.0, generator=gen(0))
    assert torch.allclose(xm, x) and torch.equal(ym, y)


# -- MultiMix -----------------------------------------------------------------------------------


@given(
    b=st.integers(1, 24),
    n=st.integers(1, 300),
    m_frac=st.floats(0, 1),
    alpha=alphas,
    seed=st.integers(0, 2**31),
)
def test_multimix_weights_rows_and_tuple_length(b, n, m_frac, alpha, seed):
    m = max(1, round(m_frac * b))
    w = MF.sample_multimix_weights(b, n=n, m=m, alpha=alpha, generator=gen(seed))
    assert w.shape == (n, b)
    assert (w >= 0).all()
    assert torch.allclose(w.sum(1), torch.ones(n), atol=1e-5)
    # At most m members per row (small α may leave a member with weight that underflows to 0).
    assert ((w > 0).sum(1) <= m).all()


def test_multimix_tuple_length_exact_and_members_uniform():
    b, n, m = 10, 20_000, 3
    w = MF.sample_multimix_weights(b, n=n, m=m, alpha=1.0, generator=gen(7))
    assert ((w > 0).sum(1) == m).all()
    # Every member is picked with probability m / b.
    freq = (w > 0).float().mean(0)
    assert torch.allclose(freq, torch.full((b,), m / b), atol=0.02)


@given(b=st.integers(1, 16), n=st.integers(1, 200), k=st.integers(2, 6), seed=st.integers(0, 2**31))
def test_multimix_identity_embedding_exposes_weights(b, n, k, seed):
    # With z = I_b the mixed embeddings *are* Λ, so the mixed targets must be Λ Y.
    g = gen(seed)
    y = random_soft_targets(b, k, g)
    z = torch.eye(b)
    m = max(1, b // 2)
    zm, ym = MF.multimix(z, y, n=n, m=m, alpha=1.0, generator=gen(seed))
    assert zm.shape == (n, b) and ym.shape == (n, k)
    assert torch.allclose(ym, zm @ y, atol=1e-5)
    assert torch.allclose(ym.sum(1), torch.ones(n), atol=1e-5)
    assert ((zm > 0).sum(1) <= m).all()


def test_multimix_of_identical_rows_is_identity():
    z = torch.randn(1, 5).expand(6, 5).contiguous()
    y = torch.tensor([[0.0, 1.0, 0.0]]).expand(6, 3).contiguous()
    zm, ym = MF.multimix(z, y, n=50, m=None, alpha=0.5, generator=gen(0))
    assert torch.allclose(zm, z[:1].expand(50, 5), atol=1e-5)
    assert torch.allclose(ym, y[:1].expand(50, 3), atol=1e-5)


def test_multimix_keeps_trailing_shape_and_is_deterministic():
    z = torch.randn(5, 3, 4)
    y = MF.one_hot(torch.tensor([0, 1, 2, 1, 0]), 3)
    a = MF.multimix(z, y, n=11, m=2, generator=gen(9))
    b = MF.multimix(z, y, n=11, m=2, generator=gen(9))
    assert a[0].shape == (11, 3, 4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_multimix_whole_batch_mixes_everyone():
    w = MF.sample_multimix_weights(6, n=100, m=None, alpha=1.0, generator=gen(0))
    assert ((w > 0).sum(1) == 6).all()


def test_multimix_gradient_reaches_embeddings():
    z = torch.randn(4, 3, requires_grad=True)
    y = MF.one_hot(torch.tensor([0, 1, 1, 0]), 2)
    zm, ym = MF.multimix(z, y, n=30, m=2, generator=gen(0))
    MF.soft_cross_entropy(zm[:, :2], ym).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_ops_keep_the_input_dtype(dtype):
    z = torch.randn(8, 5).to(dtype)
    y = MF.one_hot(torch.arange(8) % 3, 3, dtype=dtype)
    zm, ym = MF.multimix(z, y, n=20, m=3, generator=gen(0))
    assert zm.dtype == dtype and ym.dtype == dtype
    xm, ym2 = MF.mixup(z, y, alpha=1.0, per_sample=True, generator=gen(0))
    assert xm.dtype == dtype and ym2.dtype == dtype
    assert torch.allclose(ym.float().sum(1), torch.ones(20), atol=2e-2)


# -- MultiMix, sparse form (MixTuples) ----------------------------------------------------------


@pytest.mark.parametrize(("b", "m"), [(10, 1), (10, 2), (10, 3), (10, None), (31, 13), (5, 5)])
def test_sample_tuples_is_multimix_weights_in_sparse_form(b, m):
    # The same draws from the same generator: scattering the tuples gives exactly the dense Λ.
    t = MF.sample_multimix_tuples(b, n=200, m=m, alpha=0.7, generator=gen(3))
    mm = b if m is None else m
    assert isinstance(t, MF.MixTuples) and t.batch_size == b and (t.n, t.m) == (200, mm)
    assert t.indices.dtype == torch.long and t.weights.dtype == torch.float32
    assert (t.indices.sort(1).values.diff(dim=1) > 0).all()  # distinct members
    assert torch.allclose(t.weights.sum(1), torch.ones(200), atol=1e-5)
    assert torch.equal(
        MF.tuples_to_weights(t),
        MF.sample_multimix_weights(b, n=200, m=m, alpha=0.7, generator=gen(3)),
    )


@given(
    b=st.integers(1, 20),
    n=st.integers(1, 60),
    m_frac=st.floats(0, 1),
    shape=st.sampled_from([(), (3,), (2, 4)]),
    alpha=alphas,
    seed=st.integers(0, 2**31),
)
def test_interpolate_tuples_equals_the_dense_product_with_gradients(
    b, n, m_frac, shape, alpha, seed
):
    # Gather (m <= 8), dense fallback (m > 8 or m = b): both are Λ x, and so are their gradients.
    m = max(1, round(m_frac * b))
    t = MF.sample_multimix_tuples(b, n=n, m=m, alpha=alpha, generator=gen(seed))
    lam = MF.tuples_to_weights(t).double()
    x = torch.randn(b, *shape, generator=gen(seed + 1), dtype=torch.float64, requires_grad=True)
    got = MF.interpolate_tuples(t, x)
    want = MF.interpolate(lam, x)
    assert got.shape == (n, *shape) and got.dtype == torch.float64
    assert torch.allclose(got, want, atol=1e-6)
    cotangent = torch.randn(n, *shape, generator=gen(seed + 2), dtype=torch.float64)
    (g_got,) = torch.autograd.grad(got, x, cotangent)
    (g_want,) = torch.autograd.grad(want, x, cotangent)
    assert torch.allclose(g_got, g_want, atol=1e-6)


@pytest.mark.parametrize("m", [1, 2, 3, 12])
def test_interpolate_tuples_gradcheck(m):
    t = MF.sample_multimix_tuples(14, n=9, m=m, generator=gen(m))
    x = torch.randn(14, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: MF.interpolate_tuples(t, v), (x,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_interpolate_tuples_keeps_half_precision_and_accumulates_in_float32(dtype):
    t = MF.sample_multimix_tuples(16, n=50, m=3, generator=gen(0))
    x = torch.randn(16, 7).to(dtype)
    mixed = MF.interpolate_tuples(t, x)
    assert mixed.dtype == dtype
    exact = MF.interpolate(MF.tuples_to_weights(t), x.float())
    assert torch.allclose(mixed.float(), exact, atol=1e-2, rtol=1e-2)


def test_mix_tuples_rows_slice_the_mixed_rows():
    # What a global draw needs: one process keeps its share of the n rows.
    t = MF.sample_multimix_tuples(12, n=40, m=2, generator=gen(4))
    x = torch.randn(12, 5)
    share = t.rows(slice(10, 20))
    assert share.batch_size == 12 and share.n == 10
    assert torch.equal(MF.interpolate_tuples(share, x), MF.interpolate_tuples(t, x)[10:20])
    assert torch.equal(MF.interpolate_tuples(t.to("cpu"), x), MF.interpolate_tuples(t, x))


def test_interpolate_tuples_rejects_another_batch():
    t = MF.sample_multimix_tuples(6, n=4, m=2, generator=gen(0))
    with pytest.raises(
        ValueError, match="these tuples mix a batch of 6; got x with shape \\(5, 3\\)"
    ):
        MF.interpolate_tuples(t, torch.randn(5, 3))
    with pytest.raises(ValueError, match="tuples' weights must have the shape of its indices"):
        MF.interpolate_tuples(MF.MixTuples(t.indices, t.weights[:, :1], 6), torch.randn(6, 3))


def test_dirichlet_of_two_with_alpha_one_is_uniform():
    # The fast path for the default (m = 2, α = 1): (U, 1 - U).
    w = MF.sample_dirichlet(200_000, 2, 1.0, generator=gen(5), dtype=torch.float64)
    assert torch.allclose(w.sum(1), torch.ones(len(w), dtype=torch.float64))
    u = w[:, 0]
    assert abs(u.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / len(u))
    assert abs(u.var().item() - 1 / 12) < 0.02 / 12
    hist = torch.histc(u, bins=10, min=0, max=1) / len(u)
    assert torch.allclose(hist, torch.full((10,), 0.1, dtype=torch.float64), atol=0.005)


# -- soft cross-entropy -------------------------------------------------------------------------


def test_soft_cross_entropy_matches_hard_cross_entropy_on_one_hot():
    logits = torch.randn(7, 5, generator=gen(0))
    y = torch.randint(5, (7,), generator=gen(1))
    assert torch.allclose(
        MF.soft_cross_entropy(logits, MF.one_hot(y, 5)), F.cross_entropy(logits, y)
    )
    per_row = MF.soft_cross_entropy(logits, MF.one_hot(y, 5), reduction="none")
    assert per_row.shape == (7,)
    assert torch.allclose(
        MF.soft_cross_entropy(logits, MF.one_hot(y, 5), reduction="sum"), per_row.sum()
    )


def test_soft_cross_entropy_is_linear_in_targets():
    logits = torch.randn(3, 4, generator=gen(0))
    t1, t2 = MF.one_hot(torch.tensor([0, 1, 2]), 4), MF.one_hot(torch.tensor([3, 3, 0]), 4)
    mixed = MF.soft_cross_entropy(logits, 0.3 * t1 + 0.7 * t2)
    assert torch.allclose(
        mixed, 0.3 * MF.soft_cross_entropy(logits, t1) + 0.7 * MF.soft_cross_entropy(logits, t2)
    )


# The CPU's class-major path is taken for k < 16
@pytest.mark.parametrize("k", [1, 3, 10, 15, 16, 40])
@pytest.mark.parametrize("layout", ["rows", "class_major"])
def test_soft_cross_entropy_is_cross_entropy_for_any_class_count_and_layout(k, layout):
    n = 37
    logits = torch.randn(n, k, generator=gen(k), dtype=torch.float64)
    if layout == "class_major":
        # (n, k) seen through a transpose, as DenseMultiMix returns it
        logits = logits.t().contiguous().t()
    logits.requires_grad_(True)
    targets = torch.softmax(torch.randn(n, k, generator=gen(k + 1), dtype=torch.float64), 1) * 1.5
    for reduction in ("mean", "sum", "none"):
        got = MF.soft_cross_entropy(logits, targets, reduction=reduction)
        want = F.cross_entropy(logits, targets, reduction=reduction)
        assert got.shape == want.shape and torch.allclose(got, want)
        cotangent = torch.rand(want.shape, generator=gen(3), dtype=torch.float64)
        (g_got,) = torch.autograd.grad(got, logits, cotangent)
        (g_want,) = torch.autograd.grad(want, logits, cotangent)
        assert torch.allclose(g_got, g_want)


@pytest.mark.parametrize("m", [2, 5, 13, 30])  # both the Floyd (m <= 12) and the top-k path
def test_random_subsets_are_distinct_and_uniform(m):
    b, n = 31, 30_000
    idx = MF.sample_subsets(n, b, m, generator=gen(m))
    assert idx.shape == (n, m)
    assert (idx.sort(1).values.diff(dim=1) > 0).all()  # distinct within a row
    freq = torch.bincount(idx.flatten(), minlength=b).float() / n
    assert torch.allclose(freq, torch.full((b,), m / b), atol=0.015)


def test_random_subsets_cover_every_subset_equally():
    from collections import Counter

    idx = MF.sample_subsets(60_000, 5, 2, generator=gen(0))
    counts = Counter(tuple(sorted(r)) for r in idx.tolist())
    assert len(counts) == 10
    assert max(counts.values()) - min(counts.values()) < 600  # each ~6000, sd ~73


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ops_stay_on_the_data_device():
    dev = torch.device("cuda")
    z = torch.randn(16, 8, device=dev, dtype=torch.bfloat16)
    y = MF.one_hot(torch.randint(3, (16,), device=dev), 3)
    zm, ym = MF.multimix(z, y, n=64, m=3)
    assert zm.device.type == ym.device.type == "cuda"
    xm, _ = MF.mixup(z, y.to(z.dtype), alpha=1.0, per_sample=True)
    assert xm.device.type == "cuda"
    # A CPU generator draws on the CPU; only the small weights travel to the data.
    zm2, _ = MF.multimix(z, y, n=64, m=3, generator=gen(0))
    assert zm2.device.type == "cuda"
