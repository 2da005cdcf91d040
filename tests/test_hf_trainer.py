"""multimix.integrations.transformers.MixupTrainer: the real 🤗 Trainer, on the CPU, with a BERT and a
ViT built from small configs (nothing downloaded) on synthetic datasets and the default data collator.

Training mixes (the loss of the mixer's logits and targets); evaluation and prediction are unmixed (the
model's own loss and logits); a resumed run ends with the weights of an uninterrupted one; under
torchrun (2 CPU processes, gloo) the Trainer wraps the model in DDP, the mixer runs that wrapper, and
both ranks end with the same weights.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import gen, torchrun_env, torchrun_failure
from multimix import (
    EMATeacher,
    ManifoldMixup,
    Mixer,
    Mixup,
    MultiMix,
    OneOf,
    soft_binary_cross_entropy,
)

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from multimix.integrations.transformers import (  # noqa: E402  (after the importorskips)
    MIXER_RNG_FILE,
    MixupTrainer,
)

K, LENGTH = 3, 9
WORKER = Path(__file__).with_name("hf_trainer_worker.py")


def text_dataset(n: int, seed: int, *, multi_label: bool = False) -> list[dict[str, torch.Tensor]]:
    """Learnable token ids. Single-label: every token from class k's own range of ids. Multi-label:
    positions 3k..3k+2 hold tokens of class k's range when label k is present, a filler otherwise."""
    g = torch.Generator().manual_seed(seed)
    if multi_label:
        present = torch.rand(n, K, generator=g) < 0.5
        labels = present.float()  # float multi-hot (b, K): the model's BCE takes floats
        own = 10 * torch.arange(K)[None, :, None] + 5 + torch.randint(0, 5, (n, K, 3), generator=g)
        ids = torch.where(present[:, :, None], own, torch.ones_like(own)).reshape(n, LENGTH)
    else:
        labels = torch.randint(0, K, (n,), generator=g)
        ids = 10 * labels[:, None] + 5 + torch.randint(0, 10, (n, LENGTH), generator=g)
    mask = torch.ones(LENGTH, dtype=torch.long)
    return [{"input_ids": ids[i], "attention_mask": mask, "labels": labels[i]} for i in range(n)]


def image_dataset(n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """(3, 8, 8) images whose brightness tells the class."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    pixels = (
        torch.randn(n, 3, 8, 8, generator=g) + 2.0 * (2 * labels - 1).float()[:, None, None, None]
    )
    return [{"pixel_values": pixels[i], "labels": labels[i]} for i in range(n)]


def bert(**config: object) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=16, num_labels=K, **config,
    )  # fmt: skip
    return transformers.BertForSequenceClassification(cfg)


def vit() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(
        image_size=8, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, num_labels=2,
    )  # fmt: skip
    return transformers.ViTForImageClassification(cfg)


def arguments(out: Path, **overrides: object) -> transformers.TrainingArguments:
    options: dict[str, object] = dict(
        output_dir=str(out), use_cpu=True, report_to="none", disable_tqdm=True,
        per_device_train_batch_size=8, per_device_eval_batch_size=32, num_train_epochs=2,
        learning_rate=5e-3, lr_scheduler_type="constant", save_strategy="no", logging_strategy="epoch",
        dataloader_num_workers=0, seed=0,
    )  # fmt: skip
    return transformers.TrainingArguments(**{**options, **overrides})


def trainer(model, mixer, out: Path, train, evaluate=None, **overrides) -> MixupTrainer:
    return MixupTrainer(
        model=model, args=arguments(out, **overrides), train_dataset=train, eval_dataset=evaluate,
        data_collator=transformers.default_data_collator, mixer=mixer,
    )  # fmt: skip


def own_output(model: torch.nn.Module, examples: list[dict[str, torch.Tensor]]):
    """The model's own unmixed output (loss from the labels, logits) on the whole set, one batch."""
    batch = transformers.default_data_collator(examples)
    model.eval()
    with torch.no_grad():
        return model(**batch)


def train_losses(t: MixupTrainer) -> list[float]:
    return [h["loss"] for h in t.state.log_history if "loss" in h]


def test_bert_multimix_trains_mixed_and_evaluates_and_predicts_unmixed(tmp_path):
    model = bert()
    mixer = MultiMix(
        model,
        classifier="classifier",
        n=64,
        num_classes=K,
        generator=torch.Generator().manual_seed(1),
    )
    data, held_out = text_dataset(32, 0), text_dataset(32, 1)
    t = trainer(model, mixer, tmp_path, data, held_out)
    before = t.evaluate()["eval_loss"]
    drawn = mixer.generator.get_state()
    t.train()
    assert not torch.equal(mixer.generator.get_state(), drawn)  # training went through the mixer
    losses = train_losses(t)
    assert len(losses) == 2 and losses[-1] < losses[0]
    after = t.evaluate()["eval_loss"]
    assert after < before - 0.03  # it learns the task (1.097 -> 1.037 in 8 steps)
    own = own_output(
        model, held_out
    )  # evaluation is the model's own loss, unmixed (the eval set is one batch)
    torch.testing.assert_close(torch.tensor(after), own.loss, rtol=1e-5, atol=1e-6)
    predicted = t.predict(held_out)
    assert predicted.predictions.shape == (32, K)
    torch.testing.assert_close(torch.from_numpy(predicted.predictions), own.logits)


def test_one_of_two_mixers_a_coin_per_batch_trains(tmp_path):
    """The paper's "input-side mixup or MultiMix, a coin per batch" through the Trainer: OneOf is a
    multimix.Mixer like the others, and each batch goes through the member the coin chose."""
    model = bert()
    members = [
        ManifoldMixup(model, layers=["bert.embeddings"], num_classes=K, generator=gen(2)),
        MultiMix(model, classifier="classifier", n=64, num_classes=K, generator=gen(3)),
    ]
    coin = OneOf(members, probs=[0.5, 0.5], generator=gen(4))
    assert isinstance(coin, Mixer)
    data, held_out = text_dataset(64, 0), text_dataset(32, 1)
    t = trainer(model, coin, tmp_path, data, held_out, num_train_epochs=2)
    before = t.evaluate()["eval_loss"]
    drawn = [m.generator.get_state() for m in members]
    t.train()
    # Both members mixed some batches (16, a fair seeded coin: both sides with probability 1 - 2^-15)
    assert all(
        not torch.equal(m.generator.get_state(), d) for m, d in zip(members, drawn, strict=True)
    )
    after = t.evaluate()["eval_loss"]
    assert after < before
    torch.testing.assert_close(
        torch.tensor(after), own_output(model, held_out).loss, rtol=1e-5, atol=1e-6
    )


def test_vit_input_mixup_trains(tmp_path):
    model = vit()
    mixer = Mixup(model, alpha=1.0, num_classes=2, generator=torch.Generator().manual_seed(1))
    data = image_dataset(32, 0)
    t = trainer(model, mixer, tmp_path, data, data, num_train_epochs=2)
    before = t.evaluate()["eval_loss"]
    drawn = mixer.generator.get_state()
    t.train()
    assert not torch.equal(mixer.generator.get_state(), drawn)
    assert t.evaluate()["eval_loss"] < before
    assert t.predict(data).predictions.shape == (32, 2)


def test_multi_label_bert_trains_on_binary_cross_entropy(tmp_path):
    model = bert(problem_type="multi_label_classification")
    mixer = MultiMix(
        model, classifier="classifier", n=64, multi_label=True,
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    data = text_dataset(32, 0, multi_label=True)
    t = trainer(model, mixer, tmp_path, data, data, num_train_epochs=3)
    before = t.evaluate()["eval_loss"]
    t.train()
    after = t.evaluate()["eval_loss"]
    assert after < before
    own = own_output(model, data)
    labels = transformers.default_data_collator(data)["labels"]
    torch.testing.assert_close(own.loss, soft_binary_cross_entropy(own.logits, labels))
    torch.testing.assert_close(torch.tensor(after), own.loss, rtol=1e-5, atol=1e-6)


def test_the_teacher_follows_the_model_after_each_optimizer_step(tmp_path):
    model = bert()
    teacher = EMATeacher(model, momentum=0.5)  # called as teacher(**batch) on the 🤗 batches
    mixer = MultiMix(model, classifier="classifier", n=32, num_classes=K, teacher=teacher)
    t = trainer(model, mixer, tmp_path, text_dataset(16, 0), num_train_epochs=1)
    start = {k: v.clone() for k, v in teacher.module.state_dict().items()}
    t.train()
    assert t.state.global_step == 2
    final = teacher.module.state_dict()
    assert any(not torch.equal(start[k], final[k]) for k in start)
    # After two EMA steps at μ = 0.5 the teacher is between its start and the model.
    student = model.state_dict()
    w = "classifier.weight"
    assert (final[w] - student[w]).abs().max() < (start[w] - student[w]).abs().max()


def _resumable(out: Path) -> MixupTrainer:
    model = bert()  # default dropout (0.1): the Trainer's checkpoint restores torch's random state
    mixer = MultiMix(
        model,
        classifier="classifier",
        n=32,
        num_classes=K,
        generator=torch.Generator().manual_seed(1),
    )
    return trainer(
        model, mixer, out, text_dataset(32, 0), save_strategy="epoch", logging_strategy="no"
    )


def test_resuming_from_a_checkpoint_is_exact(tmp_path, caplog):
    straight = _resumable(tmp_path / "straight")
    straight.train()  # 2 epochs of 4 steps, a checkpoint after each
    first = tmp_path / "straight" / "checkpoint-4"
    assert (first / MIXER_RNG_FILE).is_file()
    resumed = _resumable(tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(first))
    expected, got = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    # Without the mixer's random state the draws differ: the file is what makes it exact.
    os.remove(first / MIXER_RNG_FILE)
    blind = _resumable(tmp_path / "blind")
    with caplog.at_level(logging.WARNING, logger="multimix.integrations.transformers"):
        blind.train(resume_from_checkpoint=str(first))
    assert "_extra_state" in caplog.text
    other = blind.model.state_dict()
    assert any(not torch.equal(expected[k], other[k]) for k in expected)


def test_bad_mixers_are_refused_before_any_training(tmp_path):
    model, data = bert(), text_dataset(8, 0)
    with pytest.raises(TypeError, match="mixer must be a multimix mixer"):
        trainer(model, model, tmp_path, data)
    other = MultiMix(bert(), classifier="classifier", num_classes=K)
    with pytest.raises(
        ValueError, match="mixer= was built on a BertForSequenceClassification that is not"
    ):
        trainer(model, other, tmp_path, data)
    single = MultiMix(model, classifier="classifier", num_classes=K)
    tagger = bert(problem_type="multi_label_classification")
    with pytest.raises(ValueError, match="multi_label=True"):
        trainer(tagger, MultiMix(tagger, classifier="classifier"), tmp_path, data)
    classifier = bert(problem_type="single_label_classification")
    with pytest.raises(ValueError, match="problem_type"):
        trainer(
            classifier,
            MultiMix(classifier, classifier="classifier", multi_label=True),
            tmp_path,
            data,
        )
    with pytest.raises(ValueError, match="compute_loss_func"):
        MixupTrainer(model=model, args=arguments(tmp_path), mixer=single, compute_loss_func=print)
    with pytest.raises(TypeError, match="mixer"):
        MixupTrainer(model=model, args=arguments(tmp_path))  # mixer= is required, keyword-only


@pytest.mark.slow
def test_under_torchrun_the_mixer_runs_ddp_and_the_ranks_stay_equal(tmp_path):
    from safetensors.torch import load_file

    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    done = subprocess.run(
        [*launcher, str(WORKER), str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=torchrun_env(),
    )  # fmt: skip
    assert done.returncode == 0, torchrun_failure(done)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for report in reports:  # different data (the sampler's shares) and mixing draws per rank
        assert report["world_size"] == 2 and report["steps"] == 4
        assert report["wrapped_in_ddp"] and report["mixer_ran_ddp"]
        assert report["changed"] > 1e-3
    a, b = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert a.keys() == b.keys()
    # DDP averages the gradients, so every rank takes the same steps (the same float operations).
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gradient_accumulation_divides_the_loss_once(tmp_path):
    """The loss of a batch is a mean over its mixed rows: the Trainer divides it by the accumulation
    steps (BERT accepts loss kwargs, so without loss_is_scaled_for_ga=False it would not, and the
    gradient would be twice as large)."""
    seen = []

    class Spy(MixupTrainer):
        def compute_loss(self, model, inputs, **kwargs):
            loss = super().compute_loss(model, inputs, **kwargs)
            seen.append(loss.item())
            return loss

    model = bert()
    mixer = MultiMix(model, classifier="classifier", n=16, num_classes=K)
    t = Spy(
        model=model, args=arguments(tmp_path, per_device_train_batch_size=4,
        gradient_accumulation_steps=2, num_train_epochs=1, logging_strategy="steps", logging_steps=1),
        train_dataset=text_dataset(8, 0), data_collator=transformers.default_data_collator, mixer=mixer,
    )  # fmt: skip
    assert t.model_accepts_loss_kwargs
    t.train()
    assert len(seen) == 2 and t.state.global_step == 1
    assert train_losses(t) == pytest.approx([sum(seen) / 2], rel=1e-5)


def test_label_smoothing_smooths_the_targets_before_mixing(tmp_path):
    model = bert()
    mixer = MultiMix(model, classifier="classifier", n=16, num_classes=K)
    t = MixupTrainer(model=model, args=arguments(tmp_path, label_smoothing_factor=0.3), mixer=mixer)
    expected = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])
    torch.testing.assert_close(t._targets(torch.tensor([0, 2])), expected)
