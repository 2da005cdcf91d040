"""MultiMix (SPEC §2): n interpolations of m-tuples of the batch, Z̃ = ΛZ and Ỹ = ΛY."""

from __future__ import annotations


import torch
from torch import Tensor

from multimix._validation import check_int, check_same_batch, check_soft_targets, check_tensor
from multimix.functional.sampling import _sampling_device, sample_dirichlet


# Up to this tuple length Floyd's algorithm (m small vector ops) beats sorting n×b uniforms.
_FLOYD_MAX_M = 12


def random_subsets(
    n: int,
    population: int,
    m: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw n independent uniform random m-subsets of ``range(population)``.

    Returns:
        int64 (n, m): each row holds m distinct indices (in no particular order).
    """
    n = check_int(n, "n")
    population = check_int(population, "population")
    m = check_int(m, "m", low=1, high=population)
    dev = _sampling_device(generator, device)
    if m > _FLOYD_MAX_M:
        # The positions of the m largest of `population` uniforms form a uniform m-subset.
        return torch.rand(n, population, generator=generator, device=dev).topk(m, dim=1, sorted=False).indices
    # Floyd's algorithm, vectorised over rows: for j = population-m .. population-1 draw t
    # uniformly in [0, j] and take t, or j if t was already taken. Every m-subset is equally likely.
    members = torch.empty(n, m, dtype=torch.long, device=dev)
    for col, j in enumerate(range(population - m, population)):
        t = torch.randint(0, j + 1, (n,), generator=generator, device=dev)
        if col:
            taken = (members[:, :col] == t[:, None]).any(dim=1)
            t = torch.where(taken, j, t)
        members[:, col] = t
    return members


def multimix_weights(
    batch_size: int,
    *,
    n: int = 1000,
    m: int | None = None,
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Sample the interpolation matrix Λ of MultiMix (SPEC §2).

    Row k holds λ^(k) ~ Dirichlet(α·1_m) scattered on a tuple of m distinct batch members, drawn
    uniformly without replacement, and zeros elsewhere.

    Args:
        batch_size: b.
        n: number of generated examples (rows), >= 1.
        m: tuple length in [1, b]; None means the whole batch (m = b).
        alpha: Dirichlet concentration, > 0.

    Returns:
        Λ, float32 (n, b), rows on the simplex, on ``device``.
    """
    b = check_int(batch_size, "batch_size")
    n = check_int(n, "n")
    m = b if m is None else check_int(m, "m", low=1, high=b)
    dev = _sampling_device(generator, device)
    weights = sample_dirichlet(n, m, alpha, generator=generator, device=dev)
    if m < b:
        members = random_subsets(n, b, m, generator=generator, device=dev)
        weights = torch.zeros(n, b, device=dev).scatter_(1, members, weights)
    if device is not None and torch.device(device) != dev:
        weights = weights.to(device, non_blocking=True)
    return weights


def interpolate(weights: Tensor, x: Tensor) -> Tensor:
    """Mix the rows of x with a weight matrix: ``weights @ x`` over the batch dimension.

    Args:
        weights: (n, b), typically from :func:`multimix_weights`.
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


def multimix(
    z: Tensor,
    targets: Tensor,
    *,
    n: int = 1000,
    m: int | None = None,
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """MultiMix: n interpolations of m-tuples of the batch, Z̃ = Λ Z and Ỹ = Λ Y (SPEC §2).

    Args:
        z: embeddings (b, ...), typically (b, d).
        targets: soft targets (b, K).
        n: number of generated examples.
        m: tuple length in [1, b]; None for the whole batch. Whole-batch tuples with α = 1 make every
            mixed target close to the class prior and training collapses; short tuples (2–3) train well.
        alpha: Dirichlet concentration, > 0.

    Returns:
        ``(z_mixed (n, ...), targets_mixed (n, K))``, mixed with the very same weights.
    """
    check_tensor(z, "z")
    check_soft_targets(targets)  # rows of probabilities, as the mixers check
    check_same_batch(z, targets, "z")
    weights = multimix_weights(z.shape[0], n=n, m=m, alpha=alpha, generator=generator, device=z.device)
    if targets.dtype != z.dtype or targets.device != z.device:
        return interpolate(weights, z), interpolate(weights, targets)
    # One product for both: Λ [Z | Y] = [Λ Z | Λ Y]. The concatenation copies only b rows.
    flat = z.reshape(z.shape[0], -1)
    mixed = interpolate(weights, torch.cat([flat, targets], dim=1))
    return mixed[:, : flat.shape[1]].reshape(-1, *z.shape[1:]), mixed[:, flat.shape[1] :]
