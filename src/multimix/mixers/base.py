"""The plumbing every mixer shares: finding a named submodule, arming hooks, train/eval dispatch."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from multimix._sharding import is_sharded
from multimix._validation import check_alpha, check_int, check_tensor
from multimix.functional import (
    one_hot,
)
from multimix.mixers.adapters import (
    Inputs,
    batch_device,
    batch_size,
    call_model,
    check_inputs,
    first_tensor,
    split_labels,
)

if TYPE_CHECKING:
    from typing_extensions import Self

#: The name that means the model's input itself in ``layers=`` (mixup at the input).
INPUT = "input"


#: Prefixes that wrappers put before the names of the model they wrap: DistributedDataParallel and
#: DataParallel (``module.``), ``torch.compile`` (``_orig_mod.``), in any nesting.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _strip_wrappers(name: str) -> str:
    while name.startswith(WRAPPER_PREFIXES):
        name = name.split(".", 1)[1]
    return name


def find_module(model: nn.Module, name: str, *, argument: str = "name") -> nn.Module:
    """Return the submodule of ``model`` called ``name`` (a key of ``model.named_modules()``).

    A model wrapped in ``DistributedDataParallel``/``DataParallel`` (``module.``) or compiled with
    ``torch.compile`` (``_orig_mod.``) is also searched under those prefixes, so the same names work
    before and after wrapping. An exact name always wins.
    """
    if not isinstance(name, str):
        raise TypeError(
            f"{argument} must be a submodule name (str), got {type(name).__name__} {name!r}"
        )
    modules = dict(model.named_modules())
    if name and name in modules:
        return modules[name]
    for key, module in modules.items():
        if key and _strip_wrappers(key) == name:
            return module
    names = dict.fromkeys(
        _strip_wrappers(k) for k in modules if k and k + "." not in WRAPPER_PREFIXES
    )
    valid = ", ".join(repr(k) for k in names) or "(the model has no submodules)"
    raise ValueError(
        f"{argument}={name!r} is not a submodule of {type(model).__name__}; valid names: {valid}"
    )


class _MixedCall:
    """What the hooked layer's mixing call leaves for the layer's later calls in the same forward.

    A layer called twice in one forward is mixed on its first call only. A later call on the mixed
    stream (``block(block(x))``, a weight-shared layer applied in sequence) is consistent: everything
    after the mixing sees the mixed rows. A later call on the clean stream (two views through one
    head, ``fc(h) + fc(g(h))``) is not: part of the output would be unmixed while the targets are
    mixed, and with n ≠ b rows the shapes would not even match. :meth:`Mixer._called_again` tells
    the two apart (see :func:`_on_mixed_stream`) and refuses the second kind.
    """

    __slots__ = ("calls", "clean", "clean_rows", "layer", "mixed", "node", "rows", "sequential")

    def __init__(
        self, layer: str, clean: Tensor | None, mixed: Tensor | None, *, sequential: bool
    ) -> None:
        self.layer, self.calls, self.sequential = layer, 1, sequential
        self.clean_rows = _rows(clean)
        self.rows = _rows(mixed)
        # Under torch.compile the hook is traced: keep no tensor, read no autograd node.
        tracing = torch.compiler.is_compiling()
        self.clean = None if tracing else clean
        self.mixed = None if tracing else mixed
        self.node = None if tracing or mixed is None else mixed.grad_fn

    def follow(self, output: object) -> None:
        """Take the mixed call's output as the mixed rows, when the rows mixed were its input: later
        calls on the mixed stream descend from it too, and it carries a gradient more often (the
        layer's own parameters give it one, where the mixed input of a frozen backbone has none)."""
        out = first_tensor(output)
        if torch.compiler.is_compiling() or not isinstance(out, Tensor) or out.grad_fn is None:
            return
        self.mixed, self.node = out, out.grad_fn


def _rows(x: object) -> int | None:
    return x.shape[0] if isinstance(x, Tensor) and x.dim() >= 1 else None


def _descends(start: object, target: object) -> bool:
    """Whether autograd node ``target`` is ``start`` or one of its ancestors (a walk of the graph)."""
    seen: dict[int, object] = {}  # id -> node, kept alive so that no id is reused during the walk
    stack = [start]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        if node is target:
            return True
        seen[id(node)] = node
        stack.extend(fn for fn, _ in getattr(node, "next_functions", ()))
    return False


def _on_mixed_stream(value: Tensor, call: _MixedCall) -> bool | None:
    """Whether ``value``, an argument of a later call of the mixed layer, comes from the mixed rows:
    True (it does), False (it does not), None (cannot tell: no autograd graph to follow, and as many
    mixed rows as clean ones)."""
    if call.mixed is not None and value is call.mixed:
        return True
    if call.clean is not None and value is call.clean:
        return False
    rows = _rows(value)
    if call.rows != call.clean_rows and rows is not None:
        if rows == call.rows:
            return True
        if rows == call.clean_rows:
            return False
    if call.node is None or torch.compiler.is_compiling():
        return None
    # The mixed rows carry gradient: a tensor computed from them does too, and its graph reaches them.
    return value.requires_grad and _descends(value.grad_fn, call.node)


def unwrapped(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel/DataParallel (``.module``) and torch.compile (``._orig_mod``)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(inner := getattr(model, "_orig_mod", None), nn.Module):
            model = inner
        else:
            return model


def _sharded_or_wrapped(model: nn.Module) -> bool:
    """Whether ``model`` synchronises its gradients across processes by itself: it is (or holds, under
    ``torch.compile``) a ``DistributedDataParallel`` wrapper, or it or one of its submodules is sharded
    by FSDP (``fully_shard``'s ``FSDPModule``, or the ``FullyShardedDataParallel`` wrapper), whose hooks
    reduce the gradients whoever calls the forward."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            return True
        inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            break
        model = inner
    return is_sharded(model)


def _inside_ddp_forward(model: nn.Module) -> bool:
    """Whether this call runs inside the forward of a ``DistributedDataParallel`` that holds ``model``
    (Lightning's DDP calls ``training_step`` there): that wrapper synchronises the gradients."""
    active = getattr(nn.parallel.DistributedDataParallel, "_active_ddp_module", None)
    return isinstance(active, nn.Module) and any(m is model for m in active.modules())


def _float_targets(targets: Tensor) -> Tensor:
    """Targets in float32 (float64 kept): mixed targets must not inherit an autocast dtype."""
    return targets if targets.dtype in (torch.float32, torch.float64) else targets.float()


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """Switch autocast off for exact target arithmetic (mixing weights times labels)."""
    # Nothing to switch off (the usual case, and cheaper)
    if not torch.is_autocast_enabled(device.type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)


class Mixer(nn.Module):
    """The base class of every mixer: ``isinstance(obj, multimix.Mixer)`` tells whether ``obj`` is one.

    What every mixer shares: ``mixer(x, y)`` returns ``(logits, targets)`` (mixed in training mode, the
    model's own output and soft targets in eval mode), ``mixer.model`` (settable to a wrapper of the
    model it was built on), ``set_alpha``, ``decide`` (the choice of a step made ahead, for CUDA graphs),
    ``close()``/``with``, and ``check_gradient_sync``. It is the shared plumbing — target conversion,
    train/eval dispatch, arming hooks, hook lifetime — not a class to subclass: how a mixer arms its
    hooks is internal and may change.

    The mixer holds the model without owning it: the model is not one of its submodules, so a module
    holding both the model and its mixer (a LightningModule) has each weight once in its
    ``state_dict()``. The mixer's ``parameters()`` and ``state_dict()`` are its own: a teacher's weights
    (:class:`multimix.EMATeacher`) and the state of its random generators. ``train()``/``eval()`` and
    ``to()``/``cuda()``/``half()`` also apply to the model, as when the mixer wrapped it.
    """

    # The mixing strength of the mixers that have one (set_alpha changes it); None: MultiMix's automatic α.
    alpha: float | None

    def __init__(
        self,
        model: nn.Module,
        *,
        num_classes: int | None,
        generator: torch.Generator | None,
        multi_label: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if num_classes is not None:
            num_classes = check_int(num_classes, "num_classes", low=1)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator or None, got {type(generator).__name__}"
            )
        self.model = model  # a plain reference (see __setattr__), not a submodule
        # For messages from hooks, which must not touch the model under torch.compile's tracing.
        self._model_name = type(unwrapped(model)).__name__
        self.num_classes = num_classes
        if not isinstance(multi_label, bool):
            raise TypeError(
                f"multi_label must be a bool, got {type(multi_label).__name__} {multi_label!r}"
            )
        # Targets are rows of independent per-class probabilities (docs/concepts/multi-label.md)
        self.multi_label = multi_label
        self.generator = generator
        # Draws that decide Python control flow (which layer, mix or not) are made on the host: reading
        # a draw made on a GPU would wait for it every step. Seeded from the generator's seed (nothing
        # drawn from it), so a seeded mixer stays reproducible; its state is checkpointed by the trainer.
        self.host_generator: torch.Generator | None = None
        if generator is not None and generator.device.type != "cpu":
            self.host_generator = torch.Generator().manual_seed(generator.initial_seed())
        self._handles: list[RemovableHandle] = []
        self._armed: object | None = None  # parameters for the next hook call; None = pass through
        # The mixing call of this forward, which later calls of the same layer are checked against
        self._mixed_call: _MixedCall | None = None
        self._decided: object | None = (
            None  # the next step's host-side choice, when drawn ahead (decide())
        )

    # -- the model: held, not owned ----------------------------------------------------------

    @property
    def model(self) -> nn.Module:
        """The model the mixer runs (and whose submodules carry its hooks); not a submodule of the
        mixer, so its weights are not in the mixer's ``parameters()`` or ``state_dict()``."""
        model: nn.Module = self.__dict__["_model_ref"]
        return model

    @model.setter
    def model(self, model: nn.Module) -> None:
        self._set_model(model)

    def _set_model(self, model: nn.Module) -> None:
        # Set again after construction: a wrapper of the same model (DistributedDataParallel after
        # the mixer was built, the model the 🤗 Trainer wraps), whose forward is then what runs.
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        built_on: nn.Module | None = self.__dict__.get("_built_on")
        if built_on is not None and not any(m is built_on for m in model.modules()):
            raise ValueError(
                f"{type(self).__name__}.model must be the model the mixer was built on "
                f"({type(built_on).__name__}) or a wrapper holding it (DistributedDataParallel, "
                f"torch.compile), got a {type(model).__name__} that does not contain it: the mixer's "
                "hooks are on that model's layers; build a new mixer for another model"
            )
        if built_on is None:
            self.__dict__["_built_on"] = unwrapped(model)
        self.__dict__["_model_ref"] = model
        self.__dict__.pop("_sync_verdict", None)

    def __setattr__(self, name: str, value: Any) -> None:
        # nn.Module.__setattr__ would register a module-valued ``model`` as a submodule.
        if name == "model":
            object.__setattr__(self, name, value)  # the property's setter
        else:
            super().__setattr__(name, value)

    def train(self, mode: bool = True) -> Self:
        """Set the training mode of the mixer and of its model: the mixer mixes when the model is in
        training mode, so ``mixer.train()`` and ``mixer.eval()`` switch the model as well."""
        super().train(mode)
        self.model.train(mode)
        return self

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Self:
        # to()/cuda()/half() move the model too, as when it was a submodule. A module holding the model
        # and the mixer converts the model twice, and the second conversion changes nothing.
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]  # (untyped in torch)
        if recurse:
            self.model._apply(fn)
        return self

    # -- random state: travels with the module that holds the mixer ---------------------------

    def get_extra_state(self) -> dict[str, Any]:
        """The state of the mixer's random generators, saved in ``state_dict()`` under ``_extra_state``.

        A framework that checkpoints modules (Lightning) then resumes the mixing draws exactly. Returns
        ``{"generator": ByteTensor or None, "device": str or None, "host_generator": ByteTensor or
        None}``: the states of ``generator`` and of ``host_generator`` (the host-side draws when the
        generator is on a GPU), and the generator's device type. A mixer built with ``generator=None``
        draws from torch's global generator, which it does not own: it saves None for both.
        """
        gen, host = self.generator, self.host_generator
        return {
            "generator": None if gen is None else gen.get_state(),
            "device": None if gen is None else gen.device.type,
            "host_generator": None if host is None else host.get_state(),
        }

    def set_extra_state(self, state: Any) -> None:
        """Restore the random state saved by :meth:`get_extra_state` (``load_state_dict()`` calls it).

        A saved None (a mixer without a generator) leaves this mixer's generators as they are. A saved
        generator state needs a mixer built with a generator on the same device type: the draws it
        would resume cannot be made from torch's global generator.
        """
        if not isinstance(state, Mapping) or set(state) != {
            "generator",
            "device",
            "host_generator",
        }:
            raise ValueError(
                f"the extra state of {type(self).__name__} must be a dict with keys 'generator', "
                f"'device' and 'host_generator' (from get_extra_state), got {state!r}"
            )
        saved = state["generator"]
        if saved is None:
            return
        if self.generator is None:
            raise ValueError(
                f"the state loaded into {type(self).__name__} holds the state of a random generator, but "
                "this mixer was built with generator=None (it draws from torch's global generator); "
                "build it with generator=torch.Generator(...) to resume the saved draws"
            )
        if state["device"] != self.generator.device.type:
            raise ValueError(
                f"the state loaded into {type(self).__name__} holds a {state['device']} generator's "
                f"state, but this mixer's generator is on {self.generator.device.type}; build the mixer "
                f"with a generator on {state['device']} to resume the saved draws"
            )
        self.generator.set_state(saved)
        if self.host_generator is not None and state["host_generator"] is not None:
            self.host_generator.set_state(state["host_generator"])

    # -- public ------------------------------------------------------------------------------

    def forward(self, x: Inputs, y: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Run the model on x, mixing when the model is in training mode.

        Args:
            x: input batch (b, ...), or a mapping of such tensors passed as ``model(**x)`` (🤗 models).
                A mapping's ``labels`` (a 🤗 data collator's batch) are not passed to the model (it
                would compute its own loss with them, on b rows where the mixer's logits may have
                more); they are the targets when ``y`` is not given.
            y: integer labels (b,) (then ``num_classes`` is required) or soft targets (b, K).
                With ``multi_label=True``: multi-hot or soft multi-label targets (b, K), every entry
                in [0, 1] and rows summing to anything (a bool or integer 0/1 matrix too).
                Optional in eval mode. Given with ``x["labels"]``, ``y`` is the targets (e.g.
                smoothed labels) and ``x["labels"]`` is ignored.

        Returns:
            ``(logits, targets)``: in training, the mixed logits (rows, K) and soft targets
            (rows, K); in eval, ``model(x)`` and the soft un-mixed targets (or None without y).
        """
        check_inputs(x, "x")
        x, labels_in_x = split_labels(x)
        if y is None:
            y = labels_in_x
        targets = labels = None
        if y is not None:
            check_tensor(y, "y")
            if y.shape[0] != batch_size(x):
                raise ValueError(
                    f"x and y must have the same batch size, got {batch_size(x)} and {y.shape[0]}"
                )
            device = batch_device(x)
            targets = _float_targets(
                one_hot(y, self.num_classes, multi_label=self.multi_label).to(device)
            )
            # (checked by one_hot) integer class indices (b,): mixers may mix them directly
            if y.dim() == 1 and not y.is_floating_point():
                labels = y.to(device=device, dtype=torch.long)
        if self.model.training:
            self._check_gradient_sync()
        if not self.model.training or (targets is not None and getattr(self, "alpha", None) == 0):
            # Eval, or a schedule at α = 0: no mixing (λ ∈ {0, 1})
            logits = call_model(self.model, x)
        elif targets is None:
            raise ValueError(
                "y is required in training mode: the mixer mixes inputs and targets together"
            )
        else:
            logits, targets = self._mix_forward(x, targets, labels)
        if targets is not None:
            self._check_classes(logits.shape, targets.shape[1], soft=labels is None)
        return logits, targets

    #: Set to False when the model's gradients are averaged across processes by something the mixer
    #: cannot see (DeepSpeed, Horovod, an all-reduce of your own): the check below then never refuses.
    check_gradient_sync: bool = True

    def _check_gradient_sync(self) -> None:
        """Refuse to train a model whose gradients nothing would average across processes.

        In a process group of several processes, a mixer built on a model that was later wrapped in
        ``DistributedDataParallel`` would run the inner model, bypassing the wrapper: each process
        would silently train its own copy. Training runs are allowed when what the mixer runs is the
        wrapper, is sharded by FSDP, or is called inside a DDP forward that holds it (Lightning).
        """
        if (
            not self.check_gradient_sync
            or not torch.is_grad_enabled()
            or torch.compiler.is_compiling()
            or not (dist.is_available() and dist.is_initialized())
            or dist.get_world_size() == 1
        ):
            return
        model = self.model
        # The model's structure, checked once per model object and class (fully_shard changes the class)
        verdict = self.__dict__.get("_sync_verdict")
        if verdict is None or verdict[0] is not model or verdict[1] is not type(model):
            trains = any(p.requires_grad for p in model.parameters())
            verdict = (model, type(model), not trains or _sharded_or_wrapped(model))
            self.__dict__["_sync_verdict"] = verdict
        if verdict[2] or _inside_ddp_forward(self.__dict__["_built_on"]):
            return
        name = type(self).__name__
        raise RuntimeError(
            f"{name} runs {type(model).__name__} directly in a group of {dist.get_world_size()} "
            "processes, outside DistributedDataParallel: its gradients would not be averaged across "
            "processes, and each process would train its own copy. Give the mixer the wrapper: "
            f"{name}(DistributedDataParallel(model), ...), or `mixer.model = ddp_model` after wrapping "
            "(or shard the model with fully_shard). If the gradients are averaged another way "
            "(DeepSpeed, Horovod, an all-reduce of your own), set `mixer.check_gradient_sync = False`"
        )

    def set_alpha(self, alpha: float) -> None:
        """Change the mixing strength, e.g. from a schedule each epoch; α = 0 turns mixing off."""
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, (int, float))
            or not math.isfinite(alpha)
            or alpha < 0
        ):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        self.alpha = float(alpha)

    def decide(self) -> object | None:
        """Draw now the host-side choice of the next training step, and return it; None if there is none.

        Some mixers choose on the host, each step, what the step does — which layer manifold mixup
        mixes at, CutMix or mixup, whether MultiMix mixes this batch (p < 1) — and the choice changes
        the kernels that run. A CUDA graph captures one such choice: a caller replaying graphs draws
        the choice first with this method and replays the graph of that choice
        (:mod:`multimix.train.graphs`). The next forward in training mode uses the choice drawn here
        instead of drawing its own, so the host generator's draws are the same as without it.
        """
        self._decided = None
        if getattr(self, "alpha", None) == 0:  # forward will not mix, so will not draw
            return None
        self._decided = self._choose()
        return self._decided

    def _choose(self) -> object | None:
        """This step's host-side choice (drawn from the host generator), or None when the mixer makes
        none; mixers that choose override it and call it from their forward through :meth:`_choice`."""
        return None

    def _choice(self) -> object | None:
        """The choice :meth:`decide` drew ahead for this step, else a fresh one."""
        choice, self._decided = self._decided, None
        return self._choose() if choice is None else choice

    def close(self) -> None:
        """Remove every hook this mixer placed on the model. Idempotent."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> Mixer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- for subclasses ----------------------------------------------------------------------

    def _mix_forward(
        self, x: Inputs, targets: Tensor, labels: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """The training forward: ``(logits, mixed targets)``. ``targets`` (b, K) are float; ``labels``
        (b,) are the integer labels they were made from, or None when soft targets were given."""
        raise NotImplementedError

    def _run_armed(self, x: Inputs, armed: object, layer: str) -> Tensor:
        """Run the model once with the hooks armed; fail loudly if the hook never fired."""
        if not self._handles:
            raise RuntimeError(f"{type(self).__name__} was closed; create a new mixer to mix again")
        self._armed, self._mixed_call = armed, None
        try:
            out = call_model(self.model, x)
        finally:
            # Reset even when the forward raised: the next forward counts its own calls.
            unused, self._armed, self._mixed_call = self._armed, None, None
        if unused is not None:
            hint = ""
            if any(name.startswith("_orig_mod") for name, _ in self.model.named_children()):
                # dynamo does not guard on hooks (torch._dynamo.config.skip_nnmodule_hook_guards).
                hint = (
                    "; torch.compile reuses graphs traced before the mixer's hooks existed: create the mixer "
                    "before the compiled model's first call, or call torch._dynamo.reset()"
                )
            raise RuntimeError(
                f"submodule {layer!r} was not called during the model's forward, so nothing was mixed{hint}"
            )
        return out

    def _take(self) -> object | None:
        """Hand the armed parameters to the first hook that asks, then disarm."""
        armed, self._armed = self._armed, None
        return armed

    def _check_classes(self, logits: tuple[int, ...], k: int, *, soft: bool) -> None:
        """Raise when (rows, K') logits do not have the K classes of the targets (a classifier whose
        number of outputs is not ``num_classes``). Other logit shapes are the loss's business."""
        if len(logits) != 2 or logits[1] == k:
            return
        given = (
            f"the soft targets y have {k} classes"
            if soft
            else f"num_classes={k} was given to {type(self).__name__}"
        )
        raise ValueError(
            f"the model gives {logits[1]} outputs per example (logits of shape {tuple(logits)}) but "
            f"{given}: the classifier and the targets must agree on the number of classes; give "
            f"{type(self).__name__} num_classes={logits[1]}, or the model a classifier with {k} outputs"
        )

    def _record_mixed(
        self, layer: str, clean: Tensor | None, mixed: Tensor | None, *, sequential: bool = True
    ) -> None:
        """Called by the hook that mixed ``layer``'s ``clean`` rows into ``mixed`` ones (None where it
        has none): later calls of ``layer`` in this forward are checked by :meth:`_called_again`.
        ``sequential=False`` refuses every later call, even on the mixed rows."""
        self._mixed_call = _MixedCall(layer, clean, mixed, sequential=sequential)

    def _called_again(self, layer: str, args: tuple[object, ...]) -> None:
        """A hook's call of ``layer`` with nothing armed. Outside a mixing forward, or for a layer other
        than the one mixed, nothing happens; a later call of the mixed layer on the clean rows raises."""
        call = self._mixed_call
        if call is None or call.layer != layer:
            return
        call.calls += 1
        # On the mixed rows if any tensor argument is (a layer may take a mask beside its input);
        # refused only when every one is known to come from elsewhere.
        found = [_on_mixed_stream(a, call) for a in args if isinstance(a, Tensor)]
        if call.sequential and (not found or any(f is not False for f in found)):
            return
        self._mixed_call = None  # one error per forward (the forward ends with it)
        model = self._model_name
        if call.sequential:
            why = (
                f"{type(self).__name__} mixed its first call, and call {call.calls} takes an input that "
                "does not come from the mixed rows (e.g. two views through one head, fc(h) + fc(g(h))): "
                "its output would be unmixed while the targets are mixed. Mixing needs the layer "
                "called once per forward, or again only on what its mixed call produced"
            )
        else:
            why = (
                f"{type(self).__name__} classifies the output of its first call, which is then not "
                "the embedding the model's own classifier sees. Mixing needs the layer called once "
                "per forward"
            )
        raise RuntimeError(
            f"submodule {layer!r} was called {call.calls} times in one forward of {model}: {why}; "
            "hook a layer that the model calls once per forward (e.g. the one before the shared "
            "layer, or a wrapper module around both calls)"
        )

    def _setup_teacher(
        self, teacher: nn.Module | None, distill_weight: float, temperature: float
    ) -> None:
        if teacher is not None and not isinstance(teacher, nn.Module):
            raise TypeError(
                f"teacher must be an nn.Module (e.g. multimix.EMATeacher) or None, got {type(teacher).__name__}"
            )
        if (
            isinstance(distill_weight, bool)
            or not isinstance(distill_weight, (int, float))
            or not (math.isfinite(distill_weight) and distill_weight >= 0)
        ):
            raise ValueError(f"distill_weight must be a finite number >= 0, got {distill_weight!r}")
        self.teacher = teacher
        self.distill_weight = float(distill_weight)
        self.temperature = check_alpha(temperature, "temperature")

    def _teacher_probs(self, x: Inputs) -> Tensor | None:
        """Teacher probabilities (b, K) on the clean batch, or None without a teacher.

        softmax(teacher(x) / τ) over the classes; with ``multi_label=True`` σ(teacher(x) / τ) per
        class, each class being its own yes/no question (as the loss, binary cross-entropy, sees it).
        """
        if self.teacher is None or self.distill_weight == 0:
            return None
        with torch.no_grad():
            scaled = call_model(self.teacher, x).float() / self.temperature
            return torch.sigmoid(scaled) if self.multi_label else torch.softmax(scaled, dim=-1)

    def _add_distilled(self, targets: Tensor, teacher_targets: Tensor | None) -> Tensor:
        """The targets with the teacher's: Ỹ + w·Ỹ', or (Ỹ + w·Ỹ') / (1 + w) with ``multi_label``.

        soft_cross_entropy of Ỹ + w·Ỹ' is CE(Ỹ) + w·CE(Ỹ'), by linearity in the targets. Binary
        cross-entropy is affine in them, not linear (its (1 − t) term), and takes entries in [0, 1]
        only: soft_binary_cross_entropy of the convex combination is (BCE(Ỹ) + w·BCE(Ỹ')) / (1 + w).
        See docs/concepts/distillation.md and docs/concepts/multi-label.md.
        """
        if teacher_targets is None:
            return targets
        combined = targets + self.distill_weight * teacher_targets.to(targets.dtype)
        return combined / (1.0 + self.distill_weight) if self.multi_label else combined

    def _uniform(self) -> float:
        """One U[0, 1) draw, on the host (from the host generator when the generator is on a GPU)."""
        if self.host_generator is not None:
            return float(torch.rand((), generator=self.host_generator))
        dev = self.generator.device if self.generator is not None else "cpu"
        return float(torch.rand((), generator=self.generator, device=dev))
