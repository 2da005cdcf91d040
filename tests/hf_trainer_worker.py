"""Run under torchrun by tests/test_hf_trainer.py: a MixupTrainer on 2 CPU processes (gloo).

Each rank trains the same tiny BERT (same seed) on its own share of a synthetic dataset (the
Trainer's distributed sampler), with a mixer drawing from its own seed, then writes its weights
(``rank<r>.safetensors``) and what ran the forward (``rank<r>.json``) to the folder given as argv[1].
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file

from multimix import MultiMix
from multimix.integrations.transformers import MixupTrainer

K, LENGTH = 3, 10


def dataset(n: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, K, (n,), generator=g)
    ids = 10 * labels[:, None] + 5 + torch.randint(0, 10, (n, LENGTH), generator=g)
    mask = torch.ones(LENGTH, dtype=torch.long)
    return [{"input_ids": ids[i], "attention_mask": mask, "labels": labels[i]} for i in range(n)]


def main(out: Path) -> None:
    torch.manual_seed(0)  # the same initial weights on every rank
    config = transformers.BertConfig(
        vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=16, num_labels=K,
    )  # fmt: skip
    model = transformers.BertForSequenceClassification(config)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    args = transformers.TrainingArguments(
        output_dir=str(out / "trainer"), use_cpu=True, report_to="none", disable_tqdm=True,
        per_device_train_batch_size=4, num_train_epochs=1, learning_rate=1e-2,
        save_strategy="no", logging_strategy="no", dataloader_num_workers=0, seed=0,
        ddp_find_unused_parameters=False,
    )  # fmt: skip
    rank = args.process_index
    mixer = MultiMix(
        model, classifier="classifier", n=32, num_classes=K,
        generator=torch.Generator().manual_seed(100 + rank),
    )  # fmt: skip
    trainer = MixupTrainer(
        model=model, args=args, train_dataset=dataset(32),
        data_collator=transformers.default_data_collator, mixer=mixer,
    )  # fmt: skip
    trainer.train()
    ddp = torch.nn.parallel.DistributedDataParallel
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / f"rank{rank}.safetensors"))
    report = {
        "world_size": args.world_size,
        "steps": trainer.state.global_step,
        "wrapped_in_ddp": isinstance(trainer.model_wrapped, ddp),
        "mixer_ran_ddp": isinstance(mixer.model, ddp),
        "changed": max((state[k] - initial[k]).abs().max().item() for k in state),
    }
    (out / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
