"""Pure tensor operations: samplers, pairwise mixup, MultiMix, targets and the soft loss.

Shapes use b for the batch size, K for the number of classes, n for the number of generated
(interpolated) examples and m for the tuple length (how many batch members each generated example
mixes). Every random draw goes through an optional ``torch.Generator``; nothing here touches NumPy's
or Python's global RNG. Sampling happens on the generator's device (or the data's device when no
generator is given) and weights are moved to the data, never the data to the CPU.

Sampling a mixing operation is kept apart from applying it, so that a hidden state and its targets
(or a teacher's predictions) can be mixed with the very same weights:

>>> lam, perm = mixup_params(b, alpha=1.0)             # sample
>>> x_mixed, y_mixed = mix_pairs(x, lam, perm), mix_pairs(y, lam, perm)   # apply twice
>>> w = multimix_weights(b, n=1000, m=2, alpha=1.0)    # (n, b), rows on the simplex
>>> z_mixed, y_mixed = interpolate(w, z), interpolate(w, y)
>>> t = sample_tuples(b, n=1000, m=2, alpha=1.0)       # the same draw, sparse: (n, m) members and weights
>>> z_mixed, y_mixed = interpolate_tuples(t, z), interpolate_tuples(t, y)   # n·m, not n·b, per feature

The operations live in one module per idea (``targets``, ``sampling``, ``pairwise``, ``cutmix``,
``multimix``, ``dense``); everything is importable from here.
"""

from multimix.functional.cutmix import cutmix, cutmix_params, paste
from multimix.functional.dense import (
    LAYOUTS,
    cam_attention,
    dense_interpolate,
    dense_interpolate_labels,
    dense_mix_logits_and_labels,
    dense_multimix,
    dense_multimix_weights,
    pooled_attention,
    positions_of,
)
from multimix.functional.multimix import (
    MixTuples,
    interpolate,
    interpolate_tuples,
    multimix,
    multimix_weights,
    random_subsets,
    sample_tuples,
    tuples_to_weights,
)
from multimix.functional.pairwise import mix_pairs, mixup, mixup_params
from multimix.functional.sampling import sample_beta, sample_dirichlet
from multimix.functional.targets import one_hot, soft_cross_entropy

__all__ = [
    "one_hot",
    "sample_beta",
    "sample_dirichlet",
    "mixup_params",
    "mix_pairs",
    "mixup",
    "cutmix_params",
    "paste",
    "cutmix",
    "random_subsets",
    "multimix_weights",
    "interpolate",
    "MixTuples",
    "sample_tuples",
    "interpolate_tuples",
    "tuples_to_weights",
    "multimix",
    "dense_multimix_weights",
    "dense_interpolate",
    "dense_interpolate_labels",
    "dense_mix_logits_and_labels",
    "dense_multimix",
    "positions_of",
    "LAYOUTS",
    "pooled_attention",
    "cam_attention",
    "soft_cross_entropy",
]

