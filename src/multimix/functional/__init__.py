"""Pure tensor operations: samplers, pairwise mixup, MultiMix, targets and the soft losses.

Shapes use b for the batch size, K for the number of classes, n for the number of generated
(interpolated) examples and m for the tuple length (how many batch members each generated example
mixes). Every random draw goes through an optional ``torch.Generator``; nothing here touches NumPy's
or Python's global RNG. Sampling happens on the generator's device (or the data's device when no
generator is given) and weights are moved to the data, never the data to the CPU.

Sampling a mixing operation is kept apart from applying it, so that a hidden state and its targets
(or a teacher's predictions) can be mixed with the very same weights:

>>> lam, perm = sample_mixup(b, alpha=1.0)             # sample
>>> x_mixed, y_mixed = mix_pairs(x, lam, perm), mix_pairs(y, lam, perm)   # apply twice
>>> w = sample_multimix_weights(b, n=1000, m=2)        # (n, b), rows on the simplex
>>> z_mixed, y_mixed = interpolate(w, z), interpolate(w, y)
>>> t = sample_multimix_tuples(b, n=1000, m=2)         # the same draw, sparse: (n, m) members and weights
>>> z_mixed, y_mixed = interpolate_tuples(t, z), interpolate_tuples(t, y)   # n·m, not n·b, per feature

Naming: every function that draws at random is called ``sample_<what>``, and nothing else is.
``<what>`` is the distribution (``sample_beta``, ``sample_dirichlet``), the structure
(``sample_subsets``), or the operation whose parameters are drawn (``sample_mixup``,
``sample_cutmix``) and, where the operation has several draws, which one
(``sample_multimix_tuples``, ``sample_multimix_weights``, ``sample_dense_multimix_weights``). So a
reader tells from the name alone whether a call consumes the generator, and each sampler sits next to
the operation that applies its draw (``mixup``/``mix_pairs``, ``cutmix``/``paste``,
``multimix``/``interpolate_tuples``/``interpolate``, ``dense_multimix``/``dense_interpolate``). The
former names (``mixup_params``, ``cutmix_params``, ``sample_tuples``, ``multimix_weights``,
``dense_multimix_weights``, ``random_subsets``) remain importable from here and from their modules,
as deprecated aliases that warn and name the new one.

Defaults: MultiMix's ops and samplers (``multimix``, ``dense_multimix``, ``sample_multimix_tuples``,
``sample_multimix_weights``, ``sample_dense_multimix_weights``) default to the mixers' pairs,
m = 2, with α = None meaning :func:`multimix_alpha` of the tuple length (1 for pairs, 1/m for
longer tuples): the same draw as :class:`multimix.MultiMix` for the same generator state. (In 0.1.0
they mixed the whole batch at α = 1, which the library itself found to collapse training.)

Multi-label targets (each class present or not, independently) are rows of per-class
probabilities in [0, 1] that need not sum to 1: ``one_hot(y, K, multi_label=True)`` validates (and
smooths) them, the mixing ops take ``multi_label=True`` and mix them with the very weights of the
inputs, and :func:`soft_binary_cross_entropy` is their loss.

The operations live in one module per idea (``targets``, ``sampling``, ``pairwise``, ``cutmix``,
``multimix``, ``dense``); everything public is importable from here. Internal fast paths and layout
helpers (``dense_mix_logits_and_labels``, ``positions_of``, ``LAYOUTS``) stay importable from here
for compatibility, but are not part of ``__all__``.
"""

from multimix.functional.cutmix import cutmix, paste, sample_cutmix
from multimix.functional.cutmix import cutmix_params as cutmix_params
from multimix.functional.dense import LAYOUTS as LAYOUTS
from multimix.functional.dense import (
    cam_attention,
    dense_interpolate,
    dense_interpolate_labels,
    dense_multimix,
    pooled_attention,
    sample_dense_multimix_weights,
)
from multimix.functional.dense import dense_mix_logits_and_labels as dense_mix_logits_and_labels
from multimix.functional.dense import dense_multimix_weights as dense_multimix_weights
from multimix.functional.dense import positions_of as positions_of
from multimix.functional.multimix import (
    MixTuples,
    interpolate,
    interpolate_tuples,
    multimix,
    multimix_alpha,
    sample_multimix_tuples,
    sample_multimix_weights,
    sample_subsets,
    tuples_to_weights,
)
from multimix.functional.multimix import multimix_weights as multimix_weights
from multimix.functional.multimix import random_subsets as random_subsets
from multimix.functional.multimix import sample_tuples as sample_tuples
from multimix.functional.pairwise import mix_pairs, mixup, sample_mixup
from multimix.functional.pairwise import mixup_params as mixup_params
from multimix.functional.sampling import (
    sample_beta,
    sample_dirichlet,
    sample_dirichlet_of,
    sample_member_alphas,
)
from multimix.functional.targets import one_hot, soft_binary_cross_entropy, soft_cross_entropy

# Imported ``as`` themselves: importable from here as before, but not public (not in __all__) — the
# internal fast path and layout helpers (LAYOUTS, positions_of, dense_mix_logits_and_labels) and the
# samplers' former names (deprecated aliases that warn on every call).
__all__ = [
    "one_hot",
    "sample_beta",
    "sample_dirichlet",
    "sample_dirichlet_of",
    "sample_member_alphas",
    "sample_mixup",
    "mix_pairs",
    "mixup",
    "sample_cutmix",
    "paste",
    "cutmix",
    "sample_subsets",
    "multimix_alpha",
    "sample_multimix_weights",
    "interpolate",
    "MixTuples",
    "sample_multimix_tuples",
    "interpolate_tuples",
    "tuples_to_weights",
    "multimix",
    "sample_dense_multimix_weights",
    "dense_interpolate",
    "dense_interpolate_labels",
    "dense_multimix",
    "pooled_attention",
    "cam_attention",
    "soft_cross_entropy",
    "soft_binary_cross_entropy",
]
