"""MultiMix: n interpolations of m-tuples of the batch, Z̃ = ΛZ and Ỹ = ΛY.

The formulas, defaults and references: docs/concepts/multimix.md.

Two representations of the same draw:

- sparse, :class:`MixTuples` from :func:`sample_multimix_tuples`: for each generated row k the m batch
  members it mixes, ``indices[k]``, and their weights ``weights[k]``; applied by
  :func:`interpolate_tuples` as ``Σ_j weights[:, j] · x[indices[:, j]]``, which costs n·m per
  feature and builds no (n, b) matrix;
- dense, Λ (n, b) from :func:`sample_multimix_weights` (the sparse draw scattered into zeros), applied by
  :func:`interpolate` as one matrix product, n·b per feature.

Both come from the very same random draws, so for one seed ``tuples_to_weights(sample_multimix_tuples(...))``
equals ``sample_multimix_weights(...)``. Drawing (given b, n, m, α and a generator) is kept apart from
applying to rows, so that embeddings, targets and a teacher's probabilities are mixed with the same
draw, and so that a draw over a larger (e.g. global, multi-process) batch can be sliced by rows.

Defaults are :class:`multimix.MultiMix`'s: pairs (m = 2), and α = None, which means
:func:`multimix_alpha` of the tuple length (1 for pairs, 1/m for longer tuples). In 0.1.0 the
functional defaults were the whole batch (m = None) at α = 1, a setting under which every mixed
target nears the batch's label histogram and training collapses; pass ``m=None, alpha=1.0`` for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from multimix._deprecation import deprecated_alias
from multimix._validation import check_alpha_or_range, check_int, check_same_batch, check_tensor
from multimix.functional.sampling import (
    _sampling_device,
    sample_dirichlet,
    sample_dirichlet_of,
    sample_member_alphas,
)
from multimix.functional.targets import check_targets

# Up to this tuple length Floyd's algorithm (m small vector ops) beats sorting n×b uniforms.
_FLOYD_MAX_M = 12

# Up to this tuple length (and below the batch size) interpolate_tuples gathers the m members of every
# row; longer tuples are scattered into the dense Λ and applied as one matrix product.
_GATHER_MAX_M = 8


class MixTuples(NamedTuple):
    """A MultiMix draw in sparse form: n generated rows, each a convex combination of m batch members.

    Row k of the mixed batch is ``Σ_j weights[k, j] · x[indices[k, j]]``; Λ[k, indices[k, j]] =
    weights[k, j] and Λ is zero elsewhere.

    Attributes:
        indices: int64 (n, m), distinct batch members per row, in ``[0, batch_size)``.
        weights: float32 (n, m), rows on the simplex.
        batch_size: b, the size of the batch the indices point into.
    """

    indices: Tensor
    weights: Tensor
    batch_size: int

    @property
    def n(self) -> int:
        return self.indices.shape[0]

    @property
    def m(self) -> int:
        return self.indices.shape[1]

    def rows(self, index: slice | Tensor) -> MixTuples:
        """The same draw restricted to some generated rows (e.g. one process's share of a global draw)."""
        return MixTuples(self.indices[index], self.weights[index], self.batch_size)

    def to(self, device: torch.device | str) -> MixTuples:
        """The draw on another device (indices and weights; a no-op where they already are)."""
        return MixTuples(
            self.indices.to(device, non_blocking=True),
            self.weights.to(device, non_blocking=True),
            self.batch_size,
        )


def sample_subsets(
    n: int,
    population: int,
    m: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw n independent uniform random m-subsets of ``range(population)``. Formerly ``random_subsets``.

    Returns:
        int64 (n, m): each row holds m distinct indices (in no particular order). For m <= 12 it is
        a view of member-major (m, n) storage: each member's column ``indices[:, j]`` is contiguous,
        which is how mixing gathers them, member by member.
    """
    n = check_int(n, "n")
    population = check_int(population, "population")
    m = check_int(m, "m", low=1, high=population)
    dev = _sampling_device(generator, device)
    if m > _FLOYD_MAX_M:
        # The positions of the m largest of `population` uniforms form a uniform m-subset.
        return (
            torch.rand(n, population, generator=generator, device=dev)
            .topk(m, dim=1, sorted=False)
            .indices
        )
    return _floyd_by_member(n, population, m, generator, dev).t()


def _floyd_by_member(
    n: int, population: int, m: int, generator: torch.Generator | None, dev: torch.device
) -> Tensor:
    """:func:`sample_subsets`' draw for m <= 12, member-major: (m, n) storage, no validation."""
    # Floyd's algorithm, vectorised over rows: for j = population-m .. population-1 draw t
    # uniformly in [0, j] and take t, or j if t was already taken. Every m-subset is equally likely.
    # Columns are kept apart and stacked once: no slicing or writes into a shared buffer per column.
    columns: list[Tensor] = []
    for j in range(population - m, population):
        t = torch.randint(0, j + 1, (n,), generator=generator, device=dev)
        if columns:
            taken = t == columns[0]
            for previous in columns[1:]:
                taken |= t == previous
            t = t.masked_fill_(taken, j)
        columns.append(t)
    return torch.stack(columns)


def multimix_alpha(m: int) -> float:
    """MultiMix's default Dirichlet concentration for tuples of m members: 1 for pairs, 1/m beyond.

    The one rule behind every ``alpha=None`` (the functional ops' and the mixers' default). With
    Dirichlet(1·1_m) weights every long tuple mixes its members nearly evenly, so each mixed target
    nears the batch's label histogram and training collapses (m = 10: 72 %, the whole batch: chance
    on MNIST-1D); α = 1/m keeps a few members dominant and every m from 3 to the whole batch trains
    (96.9–98.0 % validation; benchmarks/results/beyond_pairs.md).

    Args:
        m: the tuple length actually drawn, >= 1 (the batch size for whole-batch tuples).
    """
    m = check_int(m, "m")
    return 1.0 if m <= 2 else 1.0 / m


def _tuple_length(b: int, m: int | None) -> int:
    return b if m is None else check_int(m, "m", low=1, high=b)


def sample_multimix_tuples(
    batch_size: int,
    *,
    n: int = 1000,
    m: int | None = 2,
    alpha: float | tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> MixTuples:
    """Sample a MultiMix draw in sparse form: n tuples of m members and their weights.

    What the draw is, and its defaults: docs/concepts/multimix.md.

    Row k mixes a tuple of m distinct batch members, drawn uniformly without replacement, with
    weights λ^(k) ~ Dirichlet(α·1_m). The same draw, scattered into zeros, is
    :func:`sample_multimix_weights`'s Λ (for the same generator state), and with the same arguments
    it is the draw :class:`multimix.MultiMix` makes. Formerly ``sample_tuples`` (deprecated alias).

    Args:
        batch_size: b.
        n: number of generated examples (rows), >= 1.
        m: tuple length in [1, b], default 2 (pairs); None means the whole batch (m = b, indices
            0 .. b-1 in order). In 0.1.0 the default was None (the whole batch).
        alpha: Dirichlet concentration, > 0; None (the default) means :func:`multimix_alpha` of the
            tuple length: 1 for pairs, 1/m for longer tuples. In 0.1.0 the default was 1. A range
            ``(low, high)``: each batch member's concentration α_i is drawn uniformly in it for this
            call (:func:`~multimix.functional.sample_member_alphas`), and row k's weights are
            Dirichlet(α_i for its members) — the MultiMix paper's protocol, redrawn every batch.

    Returns:
        :class:`MixTuples` with indices int64 (n, m) and weights float32 (n, m) on ``device``
        (drawn on the generator's device and moved).
    """
    b = check_int(batch_size, "batch_size")
    n = check_int(n, "n")
    m = _tuple_length(b, m)
    alpha = multimix_alpha(m) if alpha is None else check_alpha_or_range(alpha)
    dev = _sampling_device(generator, device)
    if isinstance(alpha, tuple):
        # Per-member concentrations (the paper's protocol): members' α first, then the tuples, then
        # each tuple's weights ~ Dirichlet(α of its members).
        member_alpha = sample_member_alphas(b, alpha, generator=generator, device=dev)
        indices = _members(n, b, m, generator, dev)
        weights = sample_dirichlet_of(member_alpha[indices], generator=generator).float()
    else:
        # Weights first, then members: the order the dense Λ has always been drawn in.
        weights = sample_dirichlet(n, m, alpha, generator=generator, device=dev)
        indices = _members(n, b, m, generator, dev)
    tuples = MixTuples(indices, weights, b)
    if device is not None and torch.device(device) != dev:
        tuples = tuples.to(device)
    return tuples


def _members(
    n: int, b: int, m: int, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """The n tuples' members (n, m): distinct, uniform without replacement; the whole batch at m = b."""
    if m < b:
        return sample_subsets(n, b, m, generator=generator, device=device)
    return torch.arange(b, device=device).expand(n, b)


def tuples_to_weights(tuples: MixTuples) -> Tensor:
    """The dense Λ (n, b) of a sparse draw: its weights scattered on its indices, zeros elsewhere."""
    indices, weights, b = tuples
    return weights.new_zeros(indices.shape[0], b).scatter_(1, indices, weights)


def sample_multimix_weights(
    batch_size: int,
    *,
    n: int = 1000,
    m: int | None = 2,
    alpha: float | tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Sample the interpolation matrix Λ of MultiMix (see docs/concepts/multimix.md). Formerly ``multimix_weights``.

    Row k holds λ^(k) ~ Dirichlet(α·1_m) scattered on a tuple of m distinct batch members, drawn
    uniformly without replacement, and zeros elsewhere. The dense form of :func:`sample_multimix_tuples`
    (same draws, same generator use); for m ≪ b, mixing with the sparse form is cheaper.

    Args:
        batch_size: b.
        n: number of generated examples (rows), >= 1.
        m, alpha: as :func:`sample_multimix_tuples` (default pairs, α = :func:`multimix_alpha`).

    Returns:
        Λ, float32 (n, b), rows on the simplex, on ``device``.
    """
    b = check_int(batch_size, "batch_size")
    dev = _sampling_device(generator, device)
    weights = tuples_to_weights(
        sample_multimix_tuples(b, n=n, m=m, alpha=alpha, generator=generator, device=dev)
    )
    if device is not None and torch.device(device) != dev:
        weights = weights.to(device, non_blocking=True)
    return weights


def interpolate(weights: Tensor, x: Tensor) -> Tensor:
    """Mix the rows of x with a weight matrix: ``weights @ x`` over the batch dimension.

    Args:
        weights: (n, b), typically from :func:`sample_multimix_weights`.
        x: (b, ...) embeddings, targets or teacher probabilities.

    Returns:
        (n, ...) in x's dtype: one matrix product, no loop over rows.
    """
    if weights.dim() != 2 or weights.shape[1] != x.shape[0]:
        raise ValueError(
            f"weights must have shape (n, {x.shape[0]}) to mix a batch of {x.shape[0]}, "
            f"got {tuple(weights.shape)}"
        )
    mixed = weights.to(device=x.device, dtype=x.dtype) @ x.reshape(x.shape[0], -1)
    return mixed.reshape(weights.shape[0], *x.shape[1:])


def interpolate_tuples(tuples: MixTuples, x: Tensor) -> Tensor:
    """Mix the rows of x with a sparse draw: ``out[k] = Σ_j weights[k, j] · x[indices[k, j]]``.

    Equal to ``interpolate(tuples_to_weights(tuples), x)`` up to float rounding, for weights on the
    simplex (rows summing to 1, as sampled; with m = 2 the second weight is taken as 1 − the
    first). For short tuples (m <= 8, m < b) it gathers the m members of each row: n·m work per
    feature instead of n·b, no (n, b) matrix, and a backward pass that scatter-adds into x's b rows.
    Longer tuples use the dense product. Differentiable in x (the weights carry no gradient).

    Args:
        tuples: a :class:`MixTuples` (from :func:`sample_multimix_tuples`) over a batch of b.
        x: (b, ...) embeddings, targets or teacher probabilities.

    Returns:
        (n, ...) in x's dtype (half-precision inputs are accumulated in float32).
    """
    indices, weights, b = tuples
    if x.dim() < 1 or x.shape[0] != b:
        raise ValueError(f"these tuples mix a batch of {b}; got x with shape {tuple(x.shape)}")
    n, m = indices.shape
    if weights.shape != (n, m):
        raise ValueError(
            f"tuples' weights must have the shape of its indices {(n, m)}, got {tuple(weights.shape)}"
        )
    if m > _GATHER_MAX_M or m >= b:
        return interpolate(tuples_to_weights(tuples), x)
    flat = x.reshape(b, -1)
    indices = indices.to(x.device)
    dtype = _accumulation_dtype(weights.dtype, x.dtype)
    w = weights.to(device=x.device, dtype=dtype)
    # index_select, not x[idx]: its backward is index_add_, much cheaper on CPU than index_put_.
    mixed = combine_members(
        lambda j: flat.index_select(0, indices[:, j]).to(dtype), lambda j: w[:, j : j + 1], m
    )
    return mixed.to(x.dtype).reshape(n, *x.shape[1:])


def _accumulation_dtype(weights: torch.dtype, values: torch.dtype) -> torch.dtype:
    """float32 weights with half-precision values are summed in float32 (float64 stays float64)."""
    return torch.promote_types(weights, values)


def combine_members(
    take: Callable[[int], Tensor], weight: Callable[[int], Tensor], m: int
) -> Tensor:
    """``Σ_j weight(j) · take(j)`` over m members, the weights of each mixed row summing to 1.

    For m = 2 it is one fused ``lerp``, ``take(1) + weight(0) · (take(0) − take(1))``: exact for
    weights on the simplex (the second weight is 1 − the first, to rounding), and one pass over the
    output instead of three. Operands share one dtype.
    """
    if m == 2:
        return torch.lerp(take(1), take(0), weight(0))
    mixed = take(0) * weight(0)
    for j in range(1, m):
        mixed = mixed + take(j) * weight(j)
    return mixed


def multimix(
    z: Tensor,
    targets: Tensor,
    *,
    n: int = 1000,
    m: int | None = 2,
    alpha: float | tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
    multi_label: bool = False,
) -> tuple[Tensor, Tensor]:
    """MultiMix: n interpolations of m-tuples of the batch, Z̃ = Λ Z and Ỹ = Λ Y.

    The formulas, defaults and references: docs/concepts/multimix.md.

    With its defaults this is the draw of :class:`multimix.MultiMix` with its defaults (same
    generator state, same Λ).

    Args:
        z: embeddings (b, ...), typically (b, d).
        targets: soft targets (b, K).
        n: number of generated examples.
        m: tuple length in [1, b], default 2 (pairs); None for the whole batch. In 0.1.0 the
            default was the whole batch.
        alpha: Dirichlet concentration, > 0; None (the default): :func:`multimix_alpha` of the tuple
            length, 1 for pairs and 1/m for longer tuples. In 0.1.0 the default was 1: whole-batch
            tuples with α = 1 make every mixed target close to the class prior and training collapses.
            A range ``(low, high)``: per-member concentrations, as :func:`sample_multimix_tuples`.
        multi_label: the targets are multi-label, entries in [0, 1] whose rows need not sum to 1
            (from ``one_hot(..., multi_label=True)``); they are mixed with the same weights.

    Returns:
        ``(z_mixed (n, ...), targets_mixed (n, K))``, mixed with the very same weights.
    """
    check_tensor(z, "z")
    # rows of probabilities (or of per-class probabilities), as the mixers check
    check_targets(targets, multi_label=multi_label)
    check_same_batch(z, targets, "z")
    tuples = sample_multimix_tuples(
        z.shape[0], n=n, m=m, alpha=alpha, generator=generator, device=z.device
    )
    if targets.dtype != z.dtype or targets.device != z.device:
        return interpolate_tuples(tuples, z), interpolate_tuples(tuples, targets)
    # One pass for both: mixing [Z | Y] gives [Λ Z | Λ Y]. The concatenation copies only b rows.
    flat = z.reshape(z.shape[0], -1)
    mixed = interpolate_tuples(tuples, torch.cat([flat, targets], dim=1))
    return mixed[:, : flat.shape[1]].reshape(-1, *z.shape[1:]), mixed[:, flat.shape[1] :]


sample_tuples = deprecated_alias(
    sample_multimix_tuples, "sample_tuples", where="multimix.functional"
)
multimix_weights = deprecated_alias(
    sample_multimix_weights, "multimix_weights", where="multimix.functional"
)
random_subsets = deprecated_alias(sample_subsets, "random_subsets", where="multimix.functional")
