"""Mixers inside other modules (a LightningModule, a plain nn.Module holding the model and its mixer):
the mixer holds the model without owning its weights, its random state travels in ``state_dict()``, and
a 🤗 data collator's batch (with ``labels``) goes in as it comes."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from conftest import MLPNet, gen
from multimix import (
    ConfMix,
    DenseMultiMix,
    EMATeacher,
    ManifoldMixup,
    Mixup,
    MultiMix,
    soft_cross_entropy,
)
from multimix.functional import one_hot

K = 4


class ConvNet(nn.Module):
    """A spatial feature map (b, 8, L) and a linear classifier: what Dense MultiMix mixes."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv1d(6, 8, 3, padding=1)
        self.fc = nn.Linear(8, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(2))


MIXERS = {
    "multimix": lambda m, g: MultiMix(m, classifier="fc", n=20, num_classes=K, generator=g),
    "manifold": lambda m, g: ManifoldMixup(
        m, layers=["input", "encoder.layer1", "encoder"], num_classes=K, generator=g
    ),
    "mixup": lambda m, g: Mixup(m, num_classes=K, generator=g),
    "confmix": lambda m, g: ConfMix(m, layers=["encoder"], num_classes=K, generator=g),
    "dense": lambda m, g: DenseMultiMix(
        m, features="features", classifier="fc", n=20, num_classes=K, generator=g
    ),
}


def make_model(kind: str) -> nn.Module:
    return ConvNet() if kind == "dense" else MLPNet(k=K)


def make_batch(kind: str, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(100 + step)
    shape = (8, 6, 5) if kind == "dense" else (8, 6)
    return torch.randn(shape, generator=g), torch.randint(K, (8,), generator=g)


class Holder(nn.Module):
    """What a LightningModule looks like to torch: the model and its mixer, both attributes."""

    def __init__(self, kind: str, seed: int = 0, *, generator: bool = True) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = make_model(kind)
        self.mixer = MIXERS[kind](self.net, gen(seed) if generator else None)

    def step(self, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor):
        logits, targets = self.mixer(x, y)
        optimizer.zero_grad()
        soft_cross_entropy(logits, targets).backward()
        optimizer.step()
        return targets.detach().clone()


# -- 1. the mixer holds the model, it does not own it -----------------------------------------------


@pytest.mark.parametrize("kind", list(MIXERS))
def test_a_module_holding_a_mixer_has_each_weight_once(kind):
    holder = Holder(kind)
    keys = list(holder.state_dict())
    assert not [k for k in keys if k.startswith("mixer.model.")]
    assert [k for k in keys if k.startswith("mixer.")] == ["mixer._extra_state"]
    assert list(holder.mixer.parameters()) == []
    assert len(list(holder.parameters())) == len(list(holder.net.parameters()))
    # The model's part loads, strictly, into the model built alone
    alone = make_model(kind)
    net_state = {
        k[len("net.") :]: v for k, v in holder.state_dict().items() if k.startswith("net.")
    }
    alone.load_state_dict(net_state, strict=True)
    x, _ = make_batch(kind, 0)
    holder.net.eval(), alone.eval()
    assert torch.equal(alone(x), holder.net(x))
    # And the holder's whole state, strictly, into a fresh holder
    Holder(kind, seed=1).load_state_dict(holder.state_dict(), strict=True)


def test_the_model_attribute_is_a_reference_not_a_submodule():
    holder = Holder("multimix")
    assert holder.mixer.model is holder.net
    assert dict(holder.mixer.named_children()) == {}
    other = nn.DataParallel(
        holder.net
    )  # a wrapper calling the same hooked layers (test_wrapped.py)
    holder.mixer.model = other
    assert holder.mixer.model is other and dict(holder.mixer.named_children()) == {}
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got str"):
        holder.mixer.model = "net"
    assert "model" not in holder.mixer._modules


def test_an_ema_teacher_is_the_mixers_own_state_and_the_student_is_not():
    torch.manual_seed(0)
    net = MLPNet(k=K)
    teacher = EMATeacher(net)
    mixer = MultiMix(net, classifier="fc", n=20, num_classes=K, teacher=teacher, generator=gen())
    keys = set(mixer.state_dict())
    student = {f"teacher.module.{k}" for k in net.state_dict()}
    assert keys == student | {"_extra_state"}
    assert len(list(mixer.parameters())) == len(list(net.parameters()))  # the teacher's copies
    assert all(t is not s for t, s in zip(mixer.parameters(), net.parameters(), strict=True))
    assert not any(m is net for m in mixer.modules())


def test_train_eval_and_to_apply_to_the_model():
    holder = Holder("multimix")
    x, y = make_batch("multimix", 0)
    holder.mixer.eval()
    assert not holder.net.training
    assert holder.mixer(x, y)[0].shape == (8, K)  # eval: the model as it is
    holder.mixer.train()
    assert holder.net.training and holder.mixer(x, y)[0].shape == (20, K)
    holder.eval()  # the framework's switch reaches both
    assert not holder.net.training and not holder.mixer.training
    holder.train()
    holder.net.eval()  # the model's mode decides, whoever set it
    assert holder.mixer(x, y)[0].shape == (8, K)
    # to(): the model converts with the mixer (once, even when the holder converts both)
    expected = holder.net.fc.weight.detach().double()
    holder.mixer.to(torch.float64)
    assert holder.net.fc.weight.dtype == torch.float64
    holder.to(torch.float32).to(torch.float64)
    assert torch.equal(holder.net.fc.weight, expected)


# -- 2. the random state travels in state_dict() ------------------------------------------------------


def _run(holder: Holder, kind: str, steps: range):
    optimizer = torch.optim.SGD(holder.parameters(), lr=0.1)  # no momentum: no optimizer state
    return [holder.step(optimizer, *make_batch(kind, s)) for s in steps]


@pytest.mark.parametrize("kind", list(MIXERS))
def test_a_resumed_module_mixes_as_the_uninterrupted_one(kind):
    holder = Holder(kind)
    _run(holder, kind, range(3))
    saved = copy.deepcopy(holder.state_dict())
    targets = _run(holder, kind, range(3, 6))
    # Through torch.save/torch.load(weights_only=True), as a framework's checkpoint goes
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    resumed = Holder(kind, seed=7)  # other weights, another seed: all replaced by the saved state
    resumed.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    resumed_targets = _run(resumed, kind, range(3, 6))
    for a, b in zip(targets, resumed_targets, strict=True):
        assert torch.equal(a, b)
    for (name, a), b in zip(
        holder.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        if name != "mixer._extra_state":
            assert torch.equal(a, b), name


def test_a_mixer_without_a_generator_saves_no_random_state():
    holder = Holder("multimix", generator=False)
    state = holder.mixer.state_dict()["_extra_state"]
    assert state == {"generator": None, "device": None, "host_generator": None}
    # Loaded into a seeded mixer: nothing to restore, its generator goes on as it was
    seeded = Holder("multimix", seed=1)
    before = seeded.mixer.generator.get_state()
    seeded.load_state_dict(holder.state_dict(), strict=True)
    assert torch.equal(seeded.mixer.generator.get_state(), before)
    # A seeded mixer's draws cannot be resumed from the global generator: refused, not dropped
    with pytest.raises(ValueError, match=r"built with generator=None .* resume the saved draws"):
        holder.load_state_dict(seeded.state_dict())


def test_a_foreign_extra_state_is_refused():
    mixer = Holder("multimix").mixer
    with pytest.raises(ValueError, match=r"extra state of MultiMix must be a dict with keys"):
        mixer.set_extra_state(torch.zeros(3))
    state = mixer.get_extra_state()
    with pytest.raises(ValueError, match=r"holds a cuda generator's state, but .* on cpu"):
        mixer.set_extra_state({**state, "device": "cuda"})


# -- 3. a 🤗 data collator's batch, labels and all ---------------------------------------------------


@pytest.fixture
def bert():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
        num_labels=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return transformers.BertForSequenceClassification(config).train()


def collated(b: int = 8) -> dict[str, torch.Tensor]:
    """What DataCollatorWithPadding hands over: token ids, their mask and segments, and the labels."""
    g = gen(0)
    batch = {
        "input_ids": torch.randint(50, (b, 12), generator=g),
        "attention_mask": torch.ones(b, 12, dtype=torch.long),
        "token_type_ids": torch.zeros(b, 12, dtype=torch.long),
        "labels": torch.randint(3, (b,), generator=g),
    }
    batch["attention_mask"][:, 9:] = 0  # padded
    return batch


BERT_MIXERS = {
    "multimix": lambda m: MultiMix(
        m, classifier="classifier", n=100, num_classes=3, generator=gen()
    ),
    "manifold": lambda m: ManifoldMixup(
        m, layers=["bert.embeddings", "bert.encoder.layer.0"], num_classes=3, generator=gen()
    ),
}


@pytest.mark.parametrize("kind", list(BERT_MIXERS))
def test_a_collated_batch_with_labels_trains_bert(bert, kind):
    batch = collated()
    logits, targets = BERT_MIXERS[kind](bert)(batch)  # the labels are the targets
    rows = 100 if kind == "multimix" else 8
    assert logits.shape == targets.shape == (rows, 3)
    soft_cross_entropy(logits, targets).backward()
    assert bert.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    # The same as passing the inputs and the labels apart
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits_apart, targets_apart = BERT_MIXERS[kind](bert)(inputs, batch["labels"])
    assert torch.equal(targets, targets_apart)
    assert torch.allclose(logits, logits_apart, atol=1e-6)
    assert "labels" in batch  # the caller's batch is left as it was


def test_given_y_wins_over_the_batch_labels(bert):
    batch = collated()
    smoothed = one_hot(batch["labels"], 3) * 0.9 + 0.1 / 3  # label smoothing
    mixer = BERT_MIXERS["multimix"](bert)
    _, targets = mixer(batch, smoothed)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    _, expected = BERT_MIXERS["multimix"](bert)(inputs, smoothed)
    assert torch.equal(targets, expected)
    # Eval: the model's logits for the b examples, and the labels as targets
    mixer.eval()
    logits, targets = mixer(batch)
    assert logits.shape == (8, 3)
    assert torch.equal(targets, one_hot(batch["labels"], 3))
    with pytest.raises(ValueError, match=r"x holds only 'labels'"):
        mixer({"labels": batch["labels"]})


def test_dense_multimix_on_a_batch_with_labels():
    # Dense MultiMix classifies per position: BERT's classifier sees the pooled [CLS] token only (its
    # pooler is between), so a model with a per-position classifier takes the dict batch here.
    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(50, 8)
            self.features = nn.Linear(8, 8)
            self.fc = nn.Linear(8, 3)

        def forward(self, input_ids, attention_mask):
            h = self.features(self.embed(input_ids)) * attention_mask[..., None]
            return self.fc(h.mean(1))

    torch.manual_seed(0)
    model = Tokens()
    batch = collated()
    del batch["token_type_ids"]
    mixer = DenseMultiMix(
        model,
        features="features",
        classifier="fc",
        layout="channels_last",
        n=20,
        num_classes=3,
        generator=gen(),
    )
    logits, targets = mixer(batch)
    assert logits.shape == targets.shape == (20 * 12, 3)
