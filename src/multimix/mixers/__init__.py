"""``nn.Module`` front-ends that add mixing to any model by naming one of its submodules.

A mixer wraps a model. In training mode ``mixer(x, y)`` returns ``(logits, targets)`` ready for
:func:`multimix.functional.soft_cross_entropy`; in eval mode it returns ``model(x)`` and the un-mixed
targets. Targets are always soft, (rows, K), whatever form ``y`` had. A dict batch's ``labels`` (a 🤗
data collator's) are the targets when ``y`` is not given, and are never passed to the model.

The mixer holds the model without owning it: the model is not a submodule, so a module holding both
(a LightningModule) has each weight once in its ``state_dict()``. The mixer's own state is a teacher's
weights and its random generators' states (``_extra_state``), so a checkpointed module resumes the
mixing draws exactly; ``train()``/``eval()`` and ``to()`` also apply to the model.

How the mixing reaches inside an arbitrary model: at construction the mixer registers a forward
hook (or forward-pre hook) on each named submodule. The hooks do nothing unless the mixer's own
forward has just *armed* them with the parameters of one mixing operation; the first matching hook
call consumes them. So a plain ``model(x)`` — in training or not, while the mixer exists — runs
unchanged, residual and other non-sequential models need no rewritten forward, and ``close()`` (or
leaving a ``with`` block) removes the hooks for good.

Every mixer's arguments after the model are keyword-only. The submodule whose *input* is the
embedding is ``classifier=`` in :class:`MultiMix` and :class:`DenseMultiMix` alike (MultiMix's
former ``before=`` still works, with a ``DeprecationWarning``).

Hidden states must be batch-first, as the outputs of ``nn.Linear``, ``nn.Conv*d`` and most blocks are.

One module per idea: ``base`` (hooks, name resolution, train/eval dispatch), ``pairwise`` (mixup,
manifold mixup, ConfMix), ``cutmix`` (CutMix, and switching between it and mixup), ``multimix``,
``dense`` and ``oneof`` (one mixer per batch among several).
"""

from multimix.mixers.base import INPUT as INPUT
from multimix.mixers.base import WRAPPER_PREFIXES as WRAPPER_PREFIXES
from multimix.mixers.base import Mixer, find_module
from multimix.mixers.cutmix import CutMix, MixupOrCutMix
from multimix.mixers.dense import ATTENTIONS, DenseMultiMix
from multimix.mixers.multimix import SCOPES, MultiMix
from multimix.mixers.oneof import OneOf
from multimix.mixers.pairwise import ConfMix, ManifoldMixup, Mixup

# The values of the mixers' string options (attention=, scope=) are public, defined once (in dense
# and multimix) for the mixers and the trainer's configuration alike. INPUT and WRAPPER_PREFIXES
# (imported ``as`` themselves) stay importable from here as before, but are internal.
__all__ = [
    "Mixup",
    "ManifoldMixup",
    "ConfMix",
    "CutMix",
    "MixupOrCutMix",
    "MultiMix",
    "DenseMultiMix",
    "OneOf",
    "Mixer",
    "find_module",
    "ATTENTIONS",
    "SCOPES",
]
