"""CutMix (functional and mixer), the mixup/CutMix switch, and label smoothing in training."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from multimix import CutMix, MixupOrCutMix, soft_cross_entropy
from multimix import functional as MF
from multimix.train import TrainConfig, train


@pytest.mark.parametrize("shape", [(6, 3, 12, 10), (5, 2, 17), (7, 20)])
@pytest.mark.parametrize("per_sample", [False, True])
def test_cutmix_pastes_a_box_and_lam_is_the_exact_share(shape, per_sample):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g)
    b = shape[0]
    for seed in range(10):
        mask, lam, perm = MF.sample_cutmix(
            x.shape, alpha=1.0, per_sample=per_sample, generator=torch.Generator().manual_seed(seed)
        )
        spatial = shape[2:] if len(shape) == 4 else shape[-1:]
        assert mask.shape == (b if per_sample else 1, *spatial) and mask.dtype == torch.bool
        assert lam.shape == (b,) and perm.shape == (b,)
        own = 1 - mask.float().flatten(1).mean(1)
        assert torch.allclose(lam, own.expand(b), atol=1e-6)  # corrected λ: the share actually kept
        mixed = MF.paste(x, mask, perm)
        m = mask.expand(b, *spatial)
        if x.dim() >= 3:
            m = m.unsqueeze(1).expand_as(x)
        assert torch.equal(mixed[m], x[perm][m]) and torch.equal(mixed[~m], x[~m])
        if len(spatial) == 2 and bool(m.any()):  # the pasted region is a rectangle
            rows, cols = m[0, 0].any(1), m[0, 0].any(0)
            assert int(m[0, 0].sum()) == int(rows.sum()) * int(cols.sum())


def test_cutmix_targets_and_small_batches():
    g = torch.Generator().manual_seed(1)
    y = MF.one_hot(torch.tensor([0, 1, 2]), 3)
    x = torch.randn(3, 1, 8, 8, generator=g)
    _xm, ym = MF.cutmix(
        x, y, alpha=1.0, per_sample=True, generator=torch.Generator().manual_seed(2)
    )
    _mask, lam, perm = MF.sample_cutmix(
        x.shape, alpha=1.0, per_sample=True, generator=torch.Generator().manual_seed(2)
    )
    assert torch.allclose(ym, lam[:, None] * y + (1 - lam[:, None]) * y[perm])
    assert torch.allclose(ym.sum(1), torch.ones(3))
    one = torch.randn(1, 1, 8, 8, generator=g)
    out, t = MF.cutmix(one, y[:1], generator=g)
    assert torch.equal(out, one) and torch.allclose(t, y[:1])  # its own partner: nothing changes
    with pytest.raises(
        ValueError,
        match=r"cutmix needs inputs \(b, C, H, W\), \(b, C, L\) or \(b, L\); got shape \(2, 1, 2, 2, 2\)",
    ):
        MF.cutmix(torch.randn(2, 1, 2, 2, 2), y[:2])
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        MF.cutmix(x, y, alpha=0)


def test_cutmix_mixer_matches_the_functional_op():
    torch.manual_seed(0)
    model = nn.Identity()  # the logits are the (pasted) inputs themselves
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    logits, targets = CutMix(
        model, num_classes=4, per_sample=True, generator=torch.Generator().manual_seed(3)
    ).train()(x, y)
    xm, ym = MF.cutmix(
        x, MF.one_hot(y, 4), per_sample=True, generator=torch.Generator().manual_seed(3)
    )
    assert (
        torch.equal(logits, xm) and torch.allclose(targets, ym) and targets.dtype == torch.float32
    )


def test_cutmix_mixer_trains_and_is_off_in_eval(mlp):
    mixer = CutMix(mlp, num_classes=4, generator=torch.Generator().manual_seed(0))
    x, y = torch.randn(7, 6), torch.randint(4, (7,))
    logits, targets = mixer(x, y)
    soft_cross_entropy(logits, targets).backward()
    assert mlp.encoder.layer1.weight.grad is not None
    mlp.eval()
    logits, targets = mixer(x, y)
    assert torch.equal(logits, mlp(x)) and torch.equal(targets, MF.one_hot(y, 4))
    mlp.train()
    mixer.set_alpha(0)  # a schedule at α = 0: no mixing
    assert torch.equal(mixer(x, y)[0], mlp(x))


def test_mixup_or_cutmix_switches_with_the_given_probability():
    model = nn.Identity()
    x, y = torch.randn(8, 1, 6, 6), torch.randint(3, (8,))
    for p, expected in ((0.0, {"mixup"}), (1.0, {"cutmix"})):
        mixer = MixupOrCutMix(
            model, switch_prob=p, num_classes=3, generator=torch.Generator().manual_seed(0)
        ).train()
        seen = set()
        for _ in range(20):
            seen.add(mixer.decide())  # the choice the next forward uses
            mixer(x, y)
        assert seen == expected
    mixer = MixupOrCutMix(
        model, switch_prob=0.5, num_classes=3, generator=torch.Generator().manual_seed(0)
    ).train()
    choices = []
    for _ in range(400):
        choices.append(mixer.decide())
        out, _ = mixer(x, y)
        if choices[-1] == "cutmix":  # CutMix keeps every value of x or of its partner
            assert bool(torch.isin(out, x).all())
    share = choices.count("cutmix") / len(choices)
    assert abs(share - 0.5) < 4 * math.sqrt(0.25 / len(choices))
    with pytest.raises(ValueError, match=r"switch_prob must be a number in \[0, 1\], got 2"):
        MixupOrCutMix(model, switch_prob=2)


@pytest.mark.parametrize("method", ["cutmix", "mixup-cutmix"])
def test_cutmix_methods_train_from_the_config(tmp_path, method):
    config = TrainConfig.from_dict(
        {"dataset": "digits", "method": method, "epochs": 2, "threads": 1, "lr": 3e-3}
    )
    assert train(config, tmp_path)["best"]["test_acc"] > 0.3  # 10 classes: chance is 0.1


@pytest.mark.slow
def test_label_smoothing_bounds_the_training_loss(tmp_path):
    # CE against smoothed targets is at least their entropy: a floor a model trained on hard labels goes under.
    base = {"dataset": "toy", "train_size": 1000, "epochs": 8, "lr": 3e-3, "threads": 1}
    eps, k = 0.5, 3
    p = [1 - eps + eps / k] + [eps / k] * (k - 1)
    floor = -sum(q * math.log(q) for q in p)
    hard = train(TrainConfig.from_dict(base), tmp_path / "hard")
    smooth = train(TrainConfig.from_dict({**base, "label_smoothing": eps}), tmp_path / "smooth")

    def losses(run: str) -> list[float]:
        return [
            json.loads(line)["train_loss"]
            for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        ]

    assert min(losses("hard")) < floor <= min(losses("smooth"))
    assert hard["final"]["test_acc"] > 0.5 and smooth["final"]["test_acc"] > 0.5
