"""Integrations with the trainers users already have (optional dependencies, imported on demand).

- :mod:`multimix.integrations.lightning`: PyTorch Lightning (``pip install "multimix[lightning]"``).
- :mod:`multimix.integrations.transformers`: the 🤗 ``Trainer`` (``pip install "multimix[transformers]"``).

Nothing is imported here: ``import multimix`` never pulls Lightning or 🤗 transformers in. Import the
submodule you use; it raises an ``ImportError`` naming the extra to install when its framework is missing.
"""
