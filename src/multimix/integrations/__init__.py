"""Integrations with the trainers users already have (optional dependencies, imported on demand).

- :mod:`multimix.integrations.transformers`: the 🤗 ``Trainer`` (``pip install "multimix[transformers]"``).

Nothing is imported here: ``import multimix`` never pulls 🤗 transformers in. Import the submodule you
use; it raises an ``ImportError`` naming the extra to install when its framework is missing.

PyTorch Lightning needs no module here: a LightningModule holds a mixer as it holds any module (the
guide, docs/how-to/lightning.md, says why no callback would shorten it).
"""
