"""The mixers on 🤗 transformers models built from small configs (no weights, nothing downloaded), and on
the model conventions they use: keyword inputs, ModelOutput results, tuple outputs of hooked layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from multimix import CutMix, ManifoldMixup, Mixup, MultiMix, soft_cross_entropy
from multimix.functional import one_hot

transformers = pytest.importorskip("transformers")

K = 3


@pytest.fixture
def vit():
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=16,
        patch_size=4,
        num_channels=1,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=K,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return transformers.ViTForImageClassification(config).train()


@pytest.fixture
def bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
        num_labels=K,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return transformers.BertForSequenceClassification(config).train()


def images(b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 1, 16, 16, generator=g), torch.randint(K, (b,), generator=g)


def test_multimix_before_the_vit_classifier(vit):
    x, y = images()
    mixer = MultiMix(
        vit,
        classifier="classifier",
        n=40,
        num_classes=K,
        generator=torch.Generator().manual_seed(0),
    )
    # Keyword inputs, a ModelOutput back: logits only
    logits, targets = mixer({"pixel_values": x}, y)
    assert logits.shape == (40, K) and targets.shape == (40, K)
    soft_cross_entropy(logits, targets).backward()
    assert vit.vit.embeddings.patch_embeddings.projection.weight.grad.abs().sum() > 0
    same = MultiMix(
        vit,
        classifier="classifier",
        n=40,
        num_classes=K,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.allclose(same(x, y)[0], logits, atol=1e-6)  # a plain tensor works as well
    vit.eval()
    plain, eval_targets = mixer({"pixel_values": x}, y)
    assert torch.equal(plain, vit(pixel_values=x).logits) and torch.equal(
        eval_targets, one_hot(y, K)
    )


def test_manifold_mixup_at_a_vit_encoder_layer(vit):
    x, y = images()
    mixer = ManifoldMixup(
        vit,
        layers=["vit.layers.0"],
        alpha=1.0,
        num_classes=K,
        generator=torch.Generator().manual_seed(1),
    )
    logits, targets = mixer({"pixel_values": x}, y)
    assert logits.shape == (6, K) and not torch.allclose(logits, vit(pixel_values=x).logits)
    assert torch.allclose(targets.sum(1), torch.ones(6))
    soft_cross_entropy(logits, targets).backward()
    assert vit.vit.embeddings.patch_embeddings.projection.weight.grad is not None


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_input_mixing_of_pixel_values_in_a_dict(vit, kind):
    x, y = images()
    make = Mixup if kind == "mixup" else CutMix
    logits, targets = make(vit, num_classes=K, generator=torch.Generator().manual_seed(2))(
        {"pixel_values": x}, y
    )
    assert logits.shape == (6, K) and targets.shape == (6, K)


def test_bert_on_a_dict_of_token_ids(bert):
    g = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(50, (5, 12), generator=g),
        "attention_mask": torch.ones(5, 12, dtype=torch.long),
    }
    batch["attention_mask"][:, 9:] = 0  # padded
    y = torch.randint(K, (5,), generator=g)
    mixer = MultiMix(bert, classifier="classifier", n=30, num_classes=K, generator=g)
    logits, targets = mixer(batch, y)
    assert logits.shape == (30, K)
    soft_cross_entropy(logits, targets).backward()
    # Gradients reach the embeddings
    assert bert.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    manifold = ManifoldMixup(bert, layers=["bert.embeddings"], num_classes=K, generator=g)
    assert manifold(batch, y)[0].shape == (5, K)
    with pytest.raises(
        ValueError, match=r"needs exactly one floating-point tensor.*mix at an embedding layer"
    ):
        Mixup(bert, num_classes=K)(batch, y)
    with pytest.raises(
        ValueError,
        match=r"the tensors of x must share their batch size, got \{'input_ids': 5, 'attention_mask': 4\}",
    ):
        mixer({**batch, "attention_mask": batch["attention_mask"][:4]}, y)
    with pytest.raises(ValueError, match="x and y must have the same batch size, got 5 and 4"):
        mixer(batch, y[:4])


def test_hf_resnet_classifier_is_a_sequential():
    torch.manual_seed(0)
    config = transformers.ResNetConfig(
        num_channels=1,
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        layer_type="basic",
        num_labels=K,
    )
    model = transformers.ResNetForImageClassification(config).train()
    x, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 0])
    # Before the Sequential (its input is (b, 16, 1, 1)) or before its Linear (the exact logit shortcut):
    # the same mixing weights give the same logits (batch norm sees the same batch both times).
    whole = MultiMix(
        model,
        classifier="classifier",
        n=20,
        num_classes=K,
        generator=torch.Generator().manual_seed(0),
    )
    linear = MultiMix(
        model,
        classifier="classifier.1",
        n=20,
        num_classes=K,
        generator=torch.Generator().manual_seed(0),
    )
    a, ta = whole(x, y)
    b, tb = linear(x, y)
    assert a.shape == (20, K) and linear.linear_shortcut and not whole.linear_shortcut
    assert torch.allclose(a, b, atol=1e-5) and torch.equal(ta, tb)


class TupleBlock(nn.Module):
    """Returns (hidden, attention-like extra), as 🤗 encoder layers did before transformers 5."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 6)

    def forward(self, h):
        return self.lin(h), torch.ones(h.shape[0], 2)


class TupleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = TupleBlock()
        self.head = nn.Linear(6, K)

    def forward(self, x):
        h, extra = self.block(x)
        assert extra.shape == (x.shape[0], 2)  # the rest of the tuple passed through untouched
        return self.head(h), {"aux": extra}  # a tuple whose first element is the logits


def test_tuple_outputs_of_layers_and_models():
    from multimix.functional import mix_pairs, sample_mixup

    torch.manual_seed(0)
    model = TupleNet()
    x, y = torch.randn(5, 6), torch.randint(K, (5,))
    mixer = ManifoldMixup(
        model,
        layers=["block"],
        alpha=2.0,
        num_classes=K,
        generator=torch.Generator().manual_seed(0),
    )
    logits, _ = mixer(x, y)
    # Replay the mixer's draws: the layer (one uniform), then λ and the partners.
    g = torch.Generator().manual_seed(0)
    torch.rand((), generator=g)
    lam, perm = sample_mixup(5, alpha=2.0, generator=g)
    torch.testing.assert_close(logits, model.head(mix_pairs(model.block.lin(x), lam, perm)))
    model.eval()
    # The logits out of the tuple
    assert torch.equal(mixer(x, y)[0], model.head(model.block.lin(x)))


# -- timm models (docs/how-to/timm.md) ------------------------------------------------------------
# timm needs torchvision, whose PyPI build does not load beside the CPU torch of these machines: these
# run where timm imports (e.g. the GPU machine) and are skipped elsewhere. Module names as in timm 1.0
# (timm/models/resnet.py, vision_transformer.py, convnext.py, timm/layers/classifier.py).


@pytest.fixture
def timm():
    try:
        import timm
    except Exception as exc:  # ImportError, or torchvision failing to load its operators
        pytest.skip(f"timm does not import here: {type(exc).__name__}")
    return timm


def _timm_resnet(timm):
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=K, in_chans=1).train()


def _timm_vit(timm, **kwargs):
    # A tiny ViT: 32×32 inputs, 8×8 patches (16 tokens and a class token), 2 blocks of width 32.
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=K,
        in_chans=1,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        **kwargs,
    ).train()


def _timm_convnext(timm, **kwargs):
    # A tiny ConvNeXt: one block per stage, widths 16..128; stride 32, so 64×64 inputs give 2×2 maps.
    torch.manual_seed(0)
    return timm.create_model(
        "convnext_atto",
        pretrained=False,
        num_classes=K,
        in_chans=1,
        depths=(1, 1, 1, 1),
        dims=(16, 32, 64, 128),
        **kwargs,
    ).train()


def _timm_batch(size, b=4):
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, 1, size, size, generator=g), torch.tensor([0, 1, 2, 0][:b])


def _train_step(mixer, model, x, y, rows, first, last):
    """One optimizer step through the mixer: (rows, K) logits and targets, gradients reaching the
    model's first (``first``) and last (``last``) parameters, and those parameters changed by the step."""
    params = dict(model.named_parameters())
    before = {name: params[name].detach().clone() for name in (first, last)}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    logits, targets = mixer(x, y)
    assert logits.shape == targets.shape == (rows, K)
    torch.testing.assert_close(targets.sum(1), torch.ones(rows))
    loss = soft_cross_entropy(logits, targets)
    assert torch.isfinite(loss)
    loss.backward()
    for name in (first, last):
        grad = params[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    opt.step()
    for name in (first, last):
        assert not torch.equal(params[name].detach(), before[name]), name
    return logits, targets


def test_timm_models(timm):
    # The guide's first example: MultiMix before the final Linear of a ResNet and of a ViT.
    x, y = _timm_batch(32)
    resnet = _timm_resnet(timm)
    logits, targets = MultiMix(resnet, classifier="fc", n=20, num_classes=K)(x, y)
    assert logits.shape == targets.shape == (20, K)
    vit = _timm_vit(timm)
    logits, targets = MultiMix(vit, classifier="head", n=20, num_classes=K)(x, y)
    assert logits.shape == (20, K)
    soft_cross_entropy(logits, targets).backward()


def test_timm_resnet_mixers(timm):
    from multimix import DenseMultiMix

    model = _timm_resnet(timm)
    x, y = _timm_batch(64)  # layer4: (b, 512, 2, 2)
    first, last = "conv1.weight", "fc.weight"
    with MultiMix(model, classifier="fc", n=20, num_classes=K) as mixer:
        _train_step(mixer, model, x, y, 20, first, last)
    layers = ["layer1", "layer2", "layer3", "layer4"]
    with ManifoldMixup(model, layers=layers, num_classes=K) as mixer:
        for _ in range(3):
            _train_step(mixer, model, x, y, 4, first, last)
    with DenseMultiMix(
        model, features="layer4", classifier="fc", n=10, num_classes=K, layout="channels_first"
    ) as mixer:
        _train_step(mixer, model, x, y, 10 * 4, first, last)
    # What makes the dense loss the model's own: fc of the average-pooled map is the mean of fc per position.
    model.eval()
    with torch.no_grad():
        z = model.forward_features(x)  # the output of layer4
        per_position = model.fc(z.flatten(2).transpose(1, 2))  # (b, r, K)
        torch.testing.assert_close(per_position.mean(1), model(x), rtol=1e-4, atol=1e-5)


def test_timm_vit_mixers(timm):
    from multimix import DenseMultiMix

    x, y = _timm_batch(32)  # 16 patch tokens after the class token
    first, last = "patch_embed.proj.weight", "head.weight"
    model = _timm_vit(timm)  # global_pool="token": the class token after `norm` is classified
    assert model.num_prefix_tokens == 1
    with MultiMix(model, classifier="head", n=20, num_classes=K) as mixer:
        _train_step(mixer, model, x, y, 20, first, last)
    with ManifoldMixup(model, layers=["blocks.0", "blocks.1"], num_classes=K) as mixer:
        for _ in range(3):
            _train_step(mixer, model, x, y, 4, first, last)

    # Average pooling with the final norm applied per token (fc_norm=False): `norm`'s output is the
    # token map whose mean `head` classifies, so per-token classification is the model's own.
    model = _timm_vit(timm, global_pool="avg", fc_norm=False)
    assert isinstance(model.norm, nn.LayerNorm) and isinstance(model.fc_norm, nn.Identity)
    with DenseMultiMix(
        model,
        features="norm",
        classifier="head",
        layout="channels_last",
        prefix_tokens=model.num_prefix_tokens,
        n=10,
        num_classes=K,
    ) as mixer:
        _train_step(mixer, model, x, y, 10 * 16, first, last)
    model.eval()
    with torch.no_grad():
        tokens = model.forward_features(x)[:, model.num_prefix_tokens :]  # (b, 16, d) after `norm`
        torch.testing.assert_close(model.head(tokens).mean(1), model(x), rtol=1e-4, atol=1e-5)
    # timm's default for global_pool="avg" (fc_norm=None) normalises after pooling: `norm` is Identity
    model = _timm_vit(timm, global_pool="avg")
    assert isinstance(model.norm, nn.Identity) and isinstance(model.fc_norm, nn.LayerNorm)


def test_timm_convnext_mixers(timm):
    from multimix import DenseMultiMix

    x, y = _timm_batch(64)  # stages.3: (b, 128, 2, 2)
    first, last = "stem.0.weight", "head.fc.weight"
    model = _timm_convnext(timm)  # NormMlpClassifierHead: pool -> head.norm -> head.fc
    with MultiMix(model, classifier="head.fc", n=20, num_classes=K) as mixer:
        _train_step(mixer, model, x, y, 20, first, last)
    layers = ["stages.0", "stages.1", "stages.2", "stages.3"]
    with ManifoldMixup(model, layers=layers, num_classes=K) as mixer:
        for _ in range(3):
            _train_step(mixer, model, x, y, 4, first, last)
    # The head pools before its norm: head.fc per position of the last stage is not what it classifies.
    model.eval()
    with torch.no_grad():
        z = model.forward_features(x)
        per_position = model.head.fc(z.flatten(2).transpose(1, 2)).mean(1)
        assert not torch.allclose(per_position, model(x), rtol=1e-4, atol=1e-5)

    # head_norm_first=True: norm_pre (per position) -> pool -> head.fc, and dense mixing is exact.
    model = _timm_convnext(timm, head_norm_first=True)
    with DenseMultiMix(
        model, features="norm_pre", classifier="head.fc", n=10, num_classes=K
    ) as mixer:
        _train_step(mixer, model, x, y, 10 * 4, first, last)
    model.eval()
    with torch.no_grad():
        z = model.forward_features(x)  # the output of norm_pre
        per_position = model.head.fc(z.flatten(2).transpose(1, 2))
        torch.testing.assert_close(per_position.mean(1), model(x), rtol=1e-4, atol=1e-5)
