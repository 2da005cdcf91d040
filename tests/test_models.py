"""Reference models: shapes, named layers, and every mixer on each of them."""

from __future__ import annotations

import pytest
import torch

from multimix import ManifoldMixup, MultiMix, find_module, soft_cross_entropy
from multimix.functional import positions_of
from multimix.models import MODELS, build_model

SHAPES = {
    "mlp": (2,),
    "cnn1d": (40,),
    "convnet": (1, 8, 8),
    "preactresnet8": (1, 28, 28),
    "preactresnet18": (3, 32, 32),
    "vit": (1, 28, 28),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_model_layers_and_every_mixer(name):
    torch.manual_seed(0)
    k = 5
    model = build_model(name, input_shape=SHAPES[name], num_classes=k)
    x = torch.randn(4, *SHAPES[name])
    y = torch.arange(4) % k
    assert model(x).shape == (4, k)
    assert isinstance(find_module(model, model.classifier_layer), torch.nn.Linear)

    if model.feature_layer is not None:  # a spatial embedding, laid out as the model declares
        captured = {}
        h = find_module(model, model.feature_layer).register_forward_hook(
            lambda m, a, o: captured.setdefault("z", o)
        )
        logits = model(x)
        h.remove()
        z = captured["z"]
        assert z.dim() >= 3 and model.feature_layout in ("channels_first", "channels_last")
        # (b, r, d): the classifier applies to each row
        rows = positions_of(z, layout=model.feature_layout)
        per_position = model.fc(rows)
        # Pooled by a mean: classifying each position and averaging agree
        if model.feature_layout == "channels_first":
            assert torch.allclose(per_position.mean(1), logits, atol=1e-4)
        else:  # a ViT classifies its class token, the first position
            assert (
                torch.allclose(per_position[:, 0], logits, atol=1e-4)
                and model.feature_prefix_tokens == 1
            )

    for layer in model.manifold_layers:
        with ManifoldMixup(model, layers=[layer], num_classes=k) as mixer:
            logits, targets = mixer(x, y)
            assert logits.shape == (4, k)
            soft_cross_entropy(logits, targets).backward()
    with MultiMix(model, classifier=model.classifier_layer, n=32, num_classes=k) as mixer:
        logits, targets = mixer(x, y)
        assert logits.shape == (32, k)
        model.zero_grad()
        soft_cross_entropy(logits, targets).backward()
        assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["preactresnet8", "preactresnet18", "vit"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_resnets_take_28_and_32_pixel_images(name, shape):
    model = build_model(name, input_shape=shape, num_classes=10).eval()
    assert model(torch.rand(2, *shape)).shape == (2, 10)


def test_mlp_layers_are_numbered_for_mixing_depth():
    model = build_model("mlp", input_shape=(2,), num_classes=3)
    assert model.manifold_layers == ["input", "layer1", "layer2", "layer3"]


def test_bad_model_name_and_shape():
    with pytest.raises(
        ValueError,
        match="model must be one of mlp, cnn1d, convnet, preactresnet8, preactresnet18, vit",
    ):
        build_model("resnet50", input_shape=(3, 32, 32), num_classes=10)
    with pytest.raises(ValueError, match="convnet needs image inputs"):
        build_model("convnet", input_shape=(40,), num_classes=10)
