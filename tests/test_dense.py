"""Dense MultiMix (functional/dense.py, mixers/dense.py), attention, and targets self-distilled from an
EMA teacher (the teacher itself: test_teacher.py)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import gen
from multimix import DenseMultiMix, EMATeacher, MultiMix, soft_cross_entropy
from multimix import functional as MF
from multimix.models import build_model


def basis_embeddings(b: int, r: int) -> torch.Tensor:
    """z (b, d=b·r, r) where position j of example i is the basis vector e_{i·r + j}."""
    return torch.eye(b * r).reshape(b, r, b * r).transpose(1, 2).contiguous()


@given(b=st.integers(1, 6), r=st.integers(1, 5), n=st.integers(1, 40), seed=st.integers(0, 2**31))
def test_dense_identity_exposes_weights_and_targets(b, r, n, seed):
    # With basis-vector embeddings the mixed position embedding *is* the weight vector: entry
    # (i·r + j) of z̃[k, j] is member i's weight at j. The mixed targets must then equal those
    # weights times Y, and only position j's own coordinates may be non-zero.
    k = 3
    z = basis_embeddings(b, r)
    y = torch.softmax(torch.randn(b, k, generator=gen(seed)), 1)
    m = max(1, b // 2)
    zm, ym = MF.dense_multimix(z, y, n=n, m=m, alpha=1.0, generator=gen(seed))
    assert zm.shape == (n, r, b * r) and ym.shape == (n, r, k)
    w = zm.reshape(n, r, b, r)  # [k, j, i, j']
    off = w.clone()
    off[:, torch.arange(r), :, torch.arange(r)] = 0
    assert off.abs().max() == 0  # position j mixes only position j
    per_member = w[:, torch.arange(r), :, torch.arange(r)].permute(1, 0, 2)  # (n, r, b)
    assert torch.allclose(per_member.sum(-1), torch.ones(n, r), atol=1e-5)
    assert ((per_member > 0).sum(-1) <= m).all()
    assert torch.allclose(ym, per_member @ y, atol=1e-5)


def test_dense_weights_differ_per_position_and_tuple_is_shared():
    members, w = MF.sample_dense_multimix_weights(8, 5, n=200, m=3, alpha=1.0, generator=gen(0))
    assert members.shape == (200, 3) and w.shape == (200, 3, 5)
    assert not torch.allclose(w[:, :, 0], w[:, :, 1])  # λ drawn per position
    assert (members.sort(1).values.diff(dim=1) > 0).all()


def test_attention_on_one_member_gives_it_the_whole_weight():
    b, r, n = 4, 6, 50
    att = torch.zeros(b, r)
    att[2, 3] = 1.0  # only example 2, only at position 3
    att[:, 0] = 1.0  # everybody at position 0
    members, w = MF.sample_dense_multimix_weights(
        b, r, n=n, m=None, alpha=1.0, attention=att, generator=gen(1)
    )
    col = (members == 2).float().argmax(1)  # where example 2 sits in each tuple (m = b: everyone)
    assert torch.allclose(w[torch.arange(n), col, 3], torch.ones(n))
    # Positions where no member has attention fall back to the plain Dirichlet weights.
    _, plain = MF.sample_dense_multimix_weights(b, r, n=n, m=None, alpha=1.0, generator=gen(1))
    assert torch.allclose(w[:, :, 1], plain[:, :, 1])
    assert torch.allclose(w[:, :, 0], plain[:, :, 0])  # uniform attention: λ unchanged


@pytest.mark.parametrize("spatial", [(7,), (3, 4)])
def test_dense_multimix_on_1d_and_2d_maps_and_chunking_is_exact(spatial):
    b, d, k = 5, 6, 3
    z = torch.randn(b, d, *spatial, requires_grad=True)
    y = MF.one_hot(torch.arange(b) % k, k)
    att = torch.rand(b, *spatial)
    full = MF.dense_multimix(z, y, n=64, m=2, attention=att, generator=gen(2))
    chunked = MF.dense_multimix(z, y, n=64, m=2, attention=att, generator=gen(2), chunk_size=5)
    r = 1
    for s in spatial:
        r *= s
    assert full[0].shape == (64, r, d) and full[1].shape == (64, r, k)
    assert torch.equal(full[0], chunked[0]) and torch.equal(full[1], chunked[1])
    full[0].sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


@pytest.mark.parametrize("m", [1, 2, 3, 10])
@pytest.mark.parametrize("chunk_size", [None, 7])
@pytest.mark.parametrize("storage", ["feature_major", "channels_first"])
def test_dense_interpolate_class_major_is_the_same_mixing(m, chunk_size, storage):
    # x stored (d, b, r) (class-major by default) or (b, d, r) (a 1×1 convolution's logits, what
    # DenseMultiMix passes with class_major=True), seen as (b, r, d): same values and gradients as
    # contiguous x, and the result a view of (d, n, r) storage; class_major=False gives a contiguous
    # result from any layout. m = 10 takes the long-tuple path.
    b, r, d, n = 12, 5, 3, 20
    members, w = MF.sample_dense_multimix_weights(b, r, n=n, m=m, generator=gen(m))
    rows = torch.randn(b, r, d, dtype=torch.float64, generator=gen(1), requires_grad=True)
    order = (2, 0, 1) if storage == "feature_major" else (0, 2, 1)
    back = [order.index(i) for i in range(3)]
    stored = rows.detach().permute(*order).contiguous().permute(*back).requires_grad_(True)
    class_major = None if storage == "feature_major" else True
    want = MF.dense_interpolate(members, w, rows, chunk_size=chunk_size)
    got = MF.dense_interpolate(members, w, stored, chunk_size=chunk_size, class_major=class_major)
    assert (
        want.is_contiguous()
        and got.shape == (n, r, d)
        and got.reshape(n * r, d).t().is_contiguous()
    )
    assert torch.allclose(got, want)
    plain = MF.dense_interpolate(members, w, stored, chunk_size=chunk_size, class_major=False)
    assert plain.is_contiguous() and torch.allclose(plain, want)
    y = torch.softmax(torch.randn(b, d, dtype=torch.float64, generator=gen(2)), 1)
    y_want = MF.dense_interpolate(members, w, y, chunk_size=chunk_size)
    y_got = MF.dense_interpolate(members, w, y.t().contiguous().t(), chunk_size=chunk_size)
    assert y_got.reshape(n * r, d).t().is_contiguous() and torch.allclose(y_got, y_want)
    cotangent = torch.randn(n, r, d, dtype=torch.float64, generator=gen(3))
    (g_want,) = torch.autograd.grad(want, rows, cotangent)
    (g_got,) = torch.autograd.grad(got, stored, cotangent)
    assert torch.allclose(g_got, g_want)
    assert torch.autograd.gradcheck(
        lambda v: MF.dense_interpolate(
            members, w, v, chunk_size=chunk_size, class_major=class_major
        ),
        (stored,),
    )


@pytest.mark.parametrize(("m", "alpha"), [(1, 1.0), (2, 1.0), (2, 0.3), (3, 1.0), (5, 2.0)])
@pytest.mark.parametrize("attention", [False, True])
def test_dense_interpolate_labels_is_the_interpolation_of_one_hot_targets(m, alpha, attention):
    # Per-position mixed targets from integer labels (a scatter) equal dense_interpolate of the
    # one-hot rows, in both layouts; class-major is a (n, r, K) view of (K, n, r) storage.
    b, r, k, n = 6, 5, 4, 30
    att = torch.rand(b, r, generator=gen(7)) if attention else None
    members, w = MF.sample_dense_multimix_weights(
        b, r, n=n, m=m, alpha=alpha, attention=att, generator=gen(m)
    )
    labels = torch.tensor([0, 1, 1, 3, 0, 2])  # repeated classes: two members of one class add up
    want = MF.dense_interpolate(members, w, MF.one_hot(labels, k))
    got = MF.dense_interpolate_labels(members, w, labels, k)
    major = MF.dense_interpolate_labels(members, w, labels, k, class_major=True)
    assert got.shape == major.shape == (n, r, k) and got.is_contiguous()
    assert major.reshape(n * r, k).t().is_contiguous()
    assert torch.allclose(got, want, atol=1e-6) and torch.allclose(major, want, atol=1e-6)
    with pytest.raises(ValueError, match="labels must be integer class indices"):
        MF.dense_interpolate_labels(members, w, labels.float(), k)


@pytest.mark.parametrize("m", [1, 2, 3, 8])
def test_one_pass_mixing_of_logits_and_labels_is_the_general_mixing(m):
    # dense_mix_logits_and_labels (DenseMultiMix's CPU path) gives the values and gradients of
    # dense_interpolate + dense_interpolate_labels, as (n·r, K) views of class-major storage.
    b, r, k, n = 10, 4, 3, 25
    members, w = MF.sample_dense_multimix_weights(b, r, n=n, m=m, generator=gen(m))
    logits = torch.randn(b, k, r, dtype=torch.float64, generator=gen(1), requires_grad=True)
    labels = torch.tensor([0, 1, 1, 2, 0, 2, 2, 1, 0, 0])
    by_member = MF.sample_dense_multimix_weights(
        b, r, n=n, m=m, generator=gen(m), member_major=True
    )
    assert torch.equal(by_member[0], members.t()) and torch.equal(by_member[1], w.transpose(0, 1))
    mixed, targets = MF.dense_mix_logits_and_labels(
        logits, members.t(), w.double().transpose(0, 1), labels, k
    )
    want = MF.dense_interpolate(
        members, w.double(), logits.transpose(1, 2), class_major=True
    ).reshape(-1, k)
    want_targets = MF.dense_interpolate_labels(members, w, labels, k, dtype=torch.float64).reshape(
        -1, k
    )
    assert (
        mixed.shape == targets.shape == (n * r, k)
        and mixed.t().is_contiguous()
        and targets.t().is_contiguous()
    )
    assert torch.equal(mixed, want) and torch.allclose(targets, want_targets)
    cotangent = torch.randn(n * r, k, dtype=torch.float64, generator=gen(3))
    # Row-major and class-major gradients
    for grad_out in (
        cotangent,
        cotangent.t().contiguous().t(),
    ):
        (got_grad,) = torch.autograd.grad(mixed, logits, grad_out, retain_graph=True)
        (want_grad,) = torch.autograd.grad(want, logits, grad_out, retain_graph=True)
        assert torch.allclose(got_grad, want_grad)
    assert torch.autograd.gradcheck(
        lambda v: MF.dense_mix_logits_and_labels(
            v, members.t(), w.double().transpose(0, 1), labels, k
        )[0],
        (logits,),
    )
    long_tuples = MF.sample_dense_multimix_weights(
        b, r, n=n, m=9, generator=gen(0), member_major=True
    )
    with pytest.raises(ValueError, match="m <= 8"):
        MF.dense_mix_logits_and_labels(logits, *long_tuples, labels, k)
    with pytest.raises(ValueError, match="member_major=True draws without attention"):
        MF.sample_dense_multimix_weights(
            b, r, n=n, m=2, attention=torch.ones(b, r), member_major=True
        )
    with pytest.raises(ValueError, match="member-major"):  # the (n, m) layout by mistake
        MF.dense_mix_logits_and_labels(logits, members, w.transpose(0, 1), labels, k)


def test_dense_interpolate_equals_a_per_position_product():
    # out[k, j] = Σ_i w[k, i, j] x[members[k, i], j]: the dense Λ_j (n, b) of each position j times x[:, j].
    b, r, d, n = 7, 4, 5, 30
    members, w = MF.sample_dense_multimix_weights(b, r, n=n, m=3, alpha=0.5, generator=gen(0))
    x = torch.randn(b, r, d, dtype=torch.float64)
    lam = torch.zeros(n, r, b, dtype=torch.float64)
    lam.scatter_(2, members[:, None, :].expand(n, r, 3), w.transpose(1, 2).double())
    assert torch.allclose(MF.dense_interpolate(members, w, x), torch.einsum("njb,bjd->njd", lam, x))


def test_attention_maps():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 8, 5, generator=g)
    a = MF.pooled_attention(z)
    assert a.shape == (4, 5) and torch.allclose(a.sum(1), torch.ones(4))
    weight = torch.randn(3, 8, generator=g)
    y = MF.one_hot(torch.tensor([0, 1, 2, 0]), 3)
    c = MF.cam_attention(z, weight, y)
    expected = torch.relu(torch.einsum("bdr,bd->br", z, weight[[0, 1, 2, 0]]))
    # Every row has a positive score (the all-zero case is below)
    assert bool((expected.sum(1) > 0).all())
    expected = expected / expected.sum(1, keepdim=True)
    assert torch.allclose(c, expected, atol=1e-6)
    assert torch.allclose(
        MF.cam_attention(torch.zeros(2, 8, 5), weight, y[:2]), torch.full((2, 5), 0.2)
    )


@pytest.mark.parametrize("attention", ["none", "pooled", "cam"])
@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("cnn1d", (40,)),
        ("preactresnet18", (3, 16, 16)),
        ("preactresnet8", (1, 8, 8)),
        ("vit", (1, 8, 8)),
    ],
)
def test_dense_mixer_on_reference_models(name, shape, attention):
    torch.manual_seed(0)
    model = build_model(name, input_shape=shape, num_classes=4)
    x, y = torch.randn(3, *shape), torch.tensor([0, 1, 3])
    with DenseMultiMix(
        model,
        features=model.feature_layer,
        classifier=model.classifier_layer,
        n=20,
        attention=attention,
        layout=model.feature_layout,
        prefix_tokens=getattr(model, "feature_prefix_tokens", 0),
        num_classes=4,
        generator=gen(0),
    ) as mixer:
        logits, targets = mixer(x, y)
        # Positions: 40/4 along a sequence, 2×2 in a map, 4 patches of a ViT
        r = 10 if name == "cnn1d" else 4
        assert logits.shape == (20 * r, 4) and targets.shape == (20 * r, 4)
        assert torch.allclose(targets.sum(1), torch.ones(20 * r), atol=1e-5)
        soft_cross_entropy(logits, targets).backward()
        first = next(model.parameters())
        assert first.grad is not None and first.grad.abs().sum() > 0
        mixer.eval()
        assert torch.equal(mixer(x, y)[0], model(x))
    assert all(not mod._forward_hooks for mod in model.modules())


def test_dense_mixer_classifies_each_mixed_position():
    # With distinct one-hot labels the dense targets are the per-position weights themselves.
    torch.manual_seed(0)
    model = build_model("cnn1d", input_shape=(40,), num_classes=4)
    x, y = torch.randn(4, 40), torch.arange(4)
    mixer = DenseMultiMix(
        model, features="features", classifier="fc", n=6, m=None, num_classes=4, generator=gen(3)
    )
    logits, targets = mixer(x, y)
    z = model.features(x.unsqueeze(1)).transpose(1, 2)  # (b, r, d)
    w = targets.reshape(6, 10, 4)  # (n, r, b)
    mixed = torch.einsum("nrb,brd->nrd", w, z)
    assert torch.allclose(logits, model.fc(mixed.reshape(-1, z.shape[2])), atol=1e-5)


def test_what_follows_the_features_runs_only_under_a_wrapper():
    # A plain model's forward ends at the features (the pooled head's output would not be used),
    # except the mixer's first, which runs to the end once to check that the features are called
    # once; a wrapper (here DataParallel, as DistributedDataParallel) completes every forward and
    # gets the mixed logits.
    torch.manual_seed(0)
    model = build_model("cnn1d", input_shape=(40,), num_classes=4)
    calls = []
    model.pool.register_forward_hook(lambda *args: calls.append(1))
    x, y = torch.randn(4, 40), torch.arange(4)
    plain = DenseMultiMix(
        model, features="features", classifier="fc", n=6, num_classes=4, generator=gen(3)
    )
    logits, _ = plain(x, y)
    assert calls == [1]
    plain(x, y)
    assert calls == [1]
    plain.close()
    wrapper = torch.nn.DataParallel(model)
    wrapped = DenseMultiMix(
        wrapper, features="features", classifier="fc", n=6, num_classes=4, generator=gen(3)
    )
    same, _ = wrapped(x, y)
    assert calls == [1, 1] and torch.equal(same, logits)
    wrapped(x, y)
    assert calls == [1, 1, 1]
    wrapped.eval()
    assert torch.equal(wrapped(x)[0], model(x)) and calls == [1, 1, 1, 1, 1]


@pytest.mark.parametrize("dense", [False, True])
def test_distilled_targets_are_mixed_with_the_same_weights(dense):
    torch.manual_seed(0)
    model = build_model("cnn1d", input_shape=(40,), num_classes=4)
    teacher = EMATeacher(model)
    x, y = torch.randn(4, 40), torch.arange(4)
    kw = dict(teacher=teacher, distill_weight=0.5, temperature=2.0, num_classes=4, m=None)
    if dense:
        mixer = DenseMultiMix(
            model, features="features", classifier="fc", n=8, generator=gen(5), **kw
        )
        plain = DenseMultiMix(
            model,
            features="features",
            classifier="fc",
            n=8,
            generator=gen(5),
            num_classes=4,
            m=None,
        )
    else:
        mixer = MultiMix(model, classifier="fc", n=8, generator=gen(5), **kw)
        plain = MultiMix(model, classifier="fc", n=8, generator=gen(5), num_classes=4, m=None)
    _, targets = mixer(x, y)
    _, hard = plain(x, y)  # same generator seed: the same weights; distinct labels: hard = weights
    probs = torch.softmax(teacher(x) / 2.0, dim=1)
    assert torch.allclose(targets, hard + 0.5 * hard @ probs, atol=1e-5)
    assert torch.allclose(targets.sum(1), torch.full((len(targets),), 1.5), atol=1e-5)


def test_dense_bad_inputs():
    model = build_model("cnn1d", input_shape=(40,), num_classes=4)
    with pytest.raises(ValueError, match="attention must be one of none, pooled, cam, got 'max'"):
        DenseMultiMix(model, features="features", classifier="fc", attention="max")
    with pytest.raises(ValueError, match="features='feat' is not a submodule"):
        DenseMultiMix(model, features="feat", classifier="fc")
    with pytest.raises(
        ValueError, match="attention='cam' needs a classifier with a \\(K, d\\) weight"
    ):
        DenseMultiMix(model, features="features", classifier="pool", attention="cam")
    with pytest.raises(ValueError, match="distill_weight must be a finite number >= 0, got -1"):
        MultiMix(model, classifier="fc", teacher=EMATeacher(model), distill_weight=-1)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        MultiMix(model, classifier="fc", teacher=EMATeacher(model), temperature=0)
    with pytest.raises(ValueError, match="momentum must be a number in \\[0, 1\\]"):
        EMATeacher(model, momentum=1.5)
    with pytest.raises(ValueError, match="must be a spatial embedding"):
        DenseMultiMix(model, features="pool", classifier="fc", num_classes=4)(
            torch.randn(2, 40), torch.tensor([0, 1])
        )
    z = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="attention must be non-negative"):
        MF.dense_multimix(z, MF.one_hot(torch.tensor([0, 1]), 2), n=3, attention=-torch.ones(2, 4))
    with pytest.raises(
        ValueError, match=r"attention must hold 4 values per example \(b, r\), got shape \(2, 5\)"
    ):
        MF.dense_multimix(z, MF.one_hot(torch.tensor([0, 1]), 2), n=3, attention=torch.ones(2, 5))
    with pytest.raises(ValueError, match="z must have at least 3 dimension"):
        MF.dense_multimix(torch.randn(2, 3), MF.one_hot(torch.tensor([0, 1]), 2), n=3)


@pytest.mark.parametrize(("dense", "keep_clean"), [(False, False), (False, True), (True, False)])
def test_linear_shortcut_is_exact(dense, keep_clean):
    # g(ΛZ) = Λ g(Z) for an affine g when rows of Λ sum to 1: same logits, same gradients.
    results = []
    for shortcut in (True, False):
        torch.manual_seed(0)
        model = build_model("cnn1d", input_shape=(40,), num_classes=5)
        x, y = torch.randn(6, 40, generator=gen(1)), torch.tensor([0, 1, 2, 3, 4, 0])
        if dense:
            mixer = DenseMultiMix(
                model,
                features="features",
                classifier="fc",
                n=30,
                attention="pooled",
                linear_shortcut=shortcut,
                num_classes=5,
                generator=gen(2),
            )
        else:
            mixer = MultiMix(
                model,
                classifier="fc",
                n=30,
                keep_clean=keep_clean,
                linear_shortcut=shortcut,
                num_classes=5,
                generator=gen(2),
            )
        assert mixer.linear_shortcut == shortcut
        logits, targets = mixer(x, y)
        soft_cross_entropy(logits, targets).backward()
        results.append((logits, targets, [p.grad.clone() for p in model.parameters()]))
    (l1, t1, g1), (l2, t2, g2) = results
    assert torch.allclose(l1, l2, atol=1e-5) and torch.equal(t1, t2)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g1, g2, strict=True))


def test_linear_shortcut_not_used_for_a_linear_subclass():
    class Scaled(torch.nn.Linear):
        def forward(self, x):
            return super().forward(x) * 2

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), Scaled(4, 2))
    assert not MultiMix(model, classifier="1", num_classes=2).linear_shortcut


def test_channels_last_layout_and_prefix_tokens_are_the_same_mixing():
    g = torch.Generator().manual_seed(0)
    cf = torch.randn(4, 8, 3, 5, generator=g)  # (b, d, H, W)
    y = MF.one_hot(torch.tensor([0, 1, 2, 0]), 3)
    ref = MF.dense_multimix(cf, y, n=10, m=2, generator=torch.Generator().manual_seed(1))
    tokens = cf.flatten(2).transpose(1, 2)  # (b, 15, d), as a transformer lays them out
    last = MF.dense_multimix(
        tokens, y, n=10, m=2, layout="channels_last", generator=torch.Generator().manual_seed(1)
    )
    # A class token in front
    with_cls = torch.cat([torch.randn(4, 1, 8, generator=g), tokens], dim=1)
    cls = MF.dense_multimix(
        with_cls,
        y,
        n=10,
        m=2,
        layout="channels_last",
        prefix_tokens=1,
        generator=torch.Generator().manual_seed(1),
    )
    for got in (last, cls):
        assert torch.allclose(got[0], ref[0]) and torch.allclose(got[1], ref[1])
    with pytest.raises(
        ValueError, match="layout must be one of channels_first, channels_last, got 'nhwc'"
    ):
        MF.dense_multimix(tokens, y, layout="nhwc")
    with pytest.raises(ValueError, match="prefix_tokens=15 leaves no position of the 15"):
        MF.dense_multimix(tokens, y, layout="channels_last", prefix_tokens=15)


def test_dense_multimix_on_a_vit_s_tokens():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=16,
        patch_size=4,
        num_channels=1,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
    )
    vit = transformers.ViTForImageClassification(config).train()
    x, y = torch.randn(5, 1, 16, 16), torch.tensor([0, 1, 2, 0, 1])
    for attention in ("none", "pooled", "cam"):
        mixer = DenseMultiMix(
            vit,
            features="vit.layernorm",
            classifier="classifier",
            n=8,
            attention=attention,
            layout="channels_last",
            prefix_tokens=1,
            num_classes=3,
        )
        logits, targets = mixer({"pixel_values": x}, y)
        # 16 patch tokens, the class token left out
        assert logits.shape == targets.shape == (8 * 16, 3)
        soft_cross_entropy(logits, targets).backward()
        mixer.close()
    wrong = DenseMultiMix(
        vit, features="vit.layernorm", classifier="classifier", n=8, num_classes=3
    )
    with pytest.raises(
        ValueError,
        match=r"channels are 17, but 'classifier' takes 32 features; its last axis has 32: "
        r"use layout='channels_last'",
    ):
        wrong(x, y)
