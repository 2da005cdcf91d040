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
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from multimix._validation import (
    check_alpha,
    check_int,
    check_same_batch,
    check_soft_targets,
    check_tensor,
)

__all__ = [
    "one_hot",
    "sample_beta",
    "sample_dirichlet",
    "mixup_params",
    "mix_pairs",
    "mixup",
    "random_subsets",
    "multimix_weights",
    "interpolate",
    "multimix",
    "dense_multimix_weights",
    "dense_interpolate",
    "dense_multimix",
    "pooled_attention",
    "cam_attention",
    "soft_cross_entropy",
]


# --------------------------------------------------------------------------------------------
# targets


def one_hot(
    labels: Tensor,
    num_classes: int | None,
    *,
    smoothing: float = 0.0,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Turn integer labels (b,) into float targets (b, K), or validate soft targets (b, K).

    Args:
        labels: integer class indices of shape (b,) in ``[0, num_classes)``, or soft targets of
            shape (b, K): non-negative rows that sum to 1.
        num_classes: K. Required for integer labels; for soft targets, when given, it must match.
        smoothing: label smoothing ε in [0, 1): the result is ``(1 - ε) * targets + ε / K``.
        dtype: floating dtype of the result; default ``torch.get_default_dtype()`` for integer
            labels and the input's dtype for soft targets.

    Returns:
        Float tensor (b, K) whose rows lie on the probability simplex.
    """
    check_tensor(labels, "labels")
    if not 0.0 <= float(smoothing) < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
    if num_classes is not None:
        num_classes = check_int(num_classes, "num_classes", low=1)

    if labels.is_floating_point():
        check_soft_targets(labels, "labels")
        if num_classes is not None and labels.shape[1] != num_classes:
            raise ValueError(
                f"soft labels have {labels.shape[1]} classes but num_classes={num_classes}"
            )
        targets = labels if dtype is None else labels.to(dtype)
        num_classes = labels.shape[1]
    else:
        if labels.dtype == torch.bool or labels.is_complex():
            raise TypeError(f"labels must be integer class indices or float soft targets, got {labels.dtype}")
        if labels.dim() != 1:
            raise ValueError(f"integer labels must have shape (b,), got shape {tuple(labels.shape)}")
        if num_classes is None:
            raise ValueError("num_classes is required when labels are integer class indices")
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            raise ValueError(f"labels must lie in [0, {num_classes}) for num_classes={num_classes}, got {bad}")
        targets = F.one_hot(labels.long(), num_classes).to(dtype or torch.get_default_dtype())

    if smoothing > 0:
        targets = targets * (1.0 - smoothing) + smoothing / num_classes
    return targets


# --------------------------------------------------------------------------------------------
# samplers


def _sampling_device(generator: torch.Generator | None, device: torch.device | str | None) -> torch.device:
    """Where to draw: a generator only draws on its own device."""
    if generator is not None:
        return generator.device
    return torch.device(device) if device is not None else torch.device("cpu")


def _sampling_dtype(dtype: torch.dtype | None) -> torch.dtype:
    # The gamma kernels exist for float32/float64 only; half-precision weights are drawn in
    # float32 and cast by the caller.
    return torch.float64 if dtype == torch.float64 else torch.float32


def _log_gamma(concentration: Tensor, generator: torch.Generator | None) -> Tensor:
    """log of Gamma(concentration, 1) samples, exact and finite for concentration > 0.

    Gamma(a) samples underflow to 0 for small a (for a = 0.05 in float32, about 1% of them), which
    turns normalised weights into 0/0. For a < 1 we use the boost Gamma(a) = Gamma(a + 1) U^(1/a)
    in log space, where nothing underflows.
    """
    small = concentration < 1
    boosted = torch.where(small, concentration + 1, concentration)
    log_g = torch._standard_gamma(boosted, generator=generator).log()  # private, but the only seedable gamma
    u = torch.rand(concentration.shape, generator=generator, device=concentration.device, dtype=concentration.dtype)
    return torch.where(small, log_g + u.log() / concentration.clamp_min(torch.finfo(concentration.dtype).tiny), log_g)


def sample_beta(
    shape: int | tuple[int, ...] | torch.Size,
    alpha: float | Tensor,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Draw λ ~ Beta(α, α).

    Args:
        shape: output shape.
        alpha: a finite float > 0, or a tensor of concentrations broadcastable to ``shape`` with
            values >= 0. A concentration of exactly 0 is the limit α → 0 (no mixing): λ is 0 or 1
            with probability ½ each, never NaN.
        generator: optional seeded generator; sampling runs on its device.
        device: where to sample when no generator is given (default CPU).
        dtype: result dtype (default float32).

    Returns:
        Tensor of ``shape`` with values in [0, 1], on the sampling device.
    """
    shape = torch.Size((shape,) if isinstance(shape, int) else shape)
    dev = _sampling_device(generator, device)
    work = _sampling_dtype(dtype)
    if isinstance(alpha, Tensor):
        if not bool(torch.isfinite(alpha).all()) or bool((alpha < 0).any()):
            raise ValueError("alpha must hold finite values >= 0")
        conc = alpha.to(device=dev, dtype=work).expand(shape)
    else:
        conc = torch.full(shape, check_alpha(alpha), device=dev, dtype=work)
    # Beta(a, a) = G1 / (G1 + G2) = sigmoid(log G1 - log G2) for independent Gamma(a) draws.
    lam = torch.sigmoid(_log_gamma(conc, generator) - _log_gamma(conc, generator))
    zero = conc == 0
    if bool(zero.any()):
        coin = torch.rand(shape, generator=generator, device=dev, dtype=work) < 0.5
        lam = torch.where(zero, coin.to(work), lam)
    return lam.to(dtype or torch.float32)


def sample_dirichlet(
    n: int,
    m: int,
    alpha: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Draw n weight vectors λ ~ Dirichlet(α·1_m) (symmetric).

    Fast path: a Dirichlet vector is a vector of independent Gamma(α) draws divided by its sum, and
    for α = 1 (the default everywhere) Gamma(1) is Exponential(1), which is much cheaper to draw.
    No argument validation by ``torch.distributions`` and no per-row work.

    Returns:
        Tensor (n, m): non-negative rows that sum to 1, on the sampling device, ``dtype`` (default
        float32).
    """
    n = check_int(n, "n")
    m = check_int(m, "m")
    alpha = check_alpha(alpha)
    dev = _sampling_device(generator, device)
    work = _sampling_dtype(dtype)
    if m == 1:
        w = torch.ones(n, 1, device=dev, dtype=work)
    elif alpha == 1.0:
        # Gamma(1) = Exponential(1) = -log U. Faster than exponential_() on CPU; clamping U away
        # from 0 keeps every draw finite (U < 1, so every draw is > 0 and no row sums to 0).
        u = torch.rand(n, m, generator=generator, device=dev, dtype=work)
        g = u.clamp_min_(torch.finfo(work).tiny).log_().neg_()
        w = g / g.sum(dim=1, keepdim=True)
    elif alpha >= 1.0:
        g = torch._standard_gamma(torch.full((n, m), alpha, device=dev, dtype=work), generator=generator)
        w = g / g.sum(dim=1, keepdim=True)
    else:
        # Small α: normalise in log space so rows never become 0/0 (see _log_gamma).
        w = torch.softmax(_log_gamma(torch.full((n, m), alpha, device=dev, dtype=work), generator), dim=1)
    return w.to(dtype or torch.float32)


# --------------------------------------------------------------------------------------------
# pairwise mixup


def mixup_params(
    batch_size: int,
    *,
    alpha: float,
    per_sample: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample the parameters of one pairwise mixup: mixing factors and a partner permutation.

    Returns:
        ``(lam, perm)``: ``lam`` float32 (b,) — one value repeated when ``per_sample`` is False, one
        per pair otherwise — and ``perm`` int64 (b,), a random permutation π. Example i is mixed as
        ``lam[i] * x[i] + (1 - lam[i]) * x[perm[i]]``. Both are on ``device``.
    """
    b = check_int(batch_size, "batch_size")
    alpha = check_alpha(alpha)
    dev = _sampling_device(generator, device)
    lam = sample_beta(b if per_sample else 1, alpha, generator=generator, device=dev).expand(b)
    perm = torch.randperm(b, generator=generator, device=dev)
    if device is not None and torch.device(device) != dev:
        lam, perm = lam.to(device, non_blocking=True), perm.to(device, non_blocking=True)
    return lam, perm


def mix_pairs(x: Tensor, lam: Tensor, perm: Tensor) -> Tensor:
    """Apply pairwise mixing: ``lam[i] * x[i] + (1 - lam[i]) * x[perm[i]]`` for any x of shape (b, ...).

    ``lam`` is cast to x's dtype, so half-precision hidden states stay in half precision.
    """
    if x.shape[0] != perm.shape[0]:
        raise ValueError(f"x has batch size {x.shape[0]} but the mixing parameters are for {perm.shape[0]}")
    weight = lam.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    # lerp(a, b, w) = a + w (b - a): one fused op, and exact when lam is 0 or 1.
    return torch.lerp(x[perm.to(x.device)], x, weight)


def mixup(
    x: Tensor,
    targets: Tensor,
    *,
    alpha: float,
    per_sample: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Pairwise mixup of inputs (or hidden states) and their soft targets (SPEC §1).

    Args:
        x: (b, ...) any shape, batch first; any b >= 1.
        targets: soft targets (b, K); use :func:`one_hot` for integer labels.
        alpha: Beta(α, α) concentration, > 0.
        per_sample: one λ per pair instead of one per batch.

    Returns:
        ``(x_mixed, targets_mixed)`` with the shapes of the inputs.
    """
    check_tensor(x, "x")
    check_soft_targets(targets)  # rows of probabilities, as the mixers check
    check_same_batch(x, targets)
    lam, perm = mixup_params(x.shape[0], alpha=alpha, per_sample=per_sample, generator=generator, device=x.device)
    return mix_pairs(x, lam, perm), mix_pairs(targets, lam, perm)


# --------------------------------------------------------------------------------------------
# MultiMix


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


# --------------------------------------------------------------------------------------------
# Dense MultiMix

#: Elements of intermediate tensors one chunk of Dense MultiMix may hold (64 Mi floats = 256 MiB).
DENSE_CHUNK_ELEMENTS = 1 << 26


def dense_multimix_weights(
    batch_size: int,
    positions: int,
    *,
    n: int = 1000,
    m: int | None = None,
    alpha: float = 1.0,
    attention: Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample the per-position interpolation of Dense MultiMix (SPEC §3).

    Generated example k mixes a tuple T_k of m distinct batch members; at position j its weights are
    ``w[k, :, j] ∝ attention[T_k, j] · λ[k, :, j]`` with ``λ[k, :, j] ~ Dirichlet(α·1_m)`` drawn per
    position, ℓ1-normalised over the tuple. Where the attention of every member is 0 at a position,
    the plain λ is used (uniform attention).

    Args:
        batch_size: b.
        positions: r, the number of spatial positions.
        n: generated examples; m: tuple length in [1, b] (None: whole batch); alpha: > 0.
        attention: optional non-negative (b, r) weights of each position of each example.

    Returns:
        ``(members int64 (n, m), weights float32 (n, m, r))``: weights sum to 1 over the m members.
    """
    b = check_int(batch_size, "batch_size")
    r = check_int(positions, "positions")
    n = check_int(n, "n")
    m = b if m is None else check_int(m, "m", low=1, high=b)
    dev = _sampling_device(generator, device)
    if m == b:
        members = torch.arange(b, device=dev).expand(n, b)
    else:
        members = random_subsets(n, b, m, generator=generator, device=dev)
    lam = sample_dirichlet(n * r, m, alpha, generator=generator, device=dev).view(n, r, m).transpose(1, 2)
    if device is not None and torch.device(device) != dev:
        members, lam = members.to(device), lam.to(device)
    if attention is None:
        return members, lam
    if attention.shape != (b, r):
        raise ValueError(f"attention must have shape (b, r) = ({b}, {r}), got {tuple(attention.shape)}")
    att = attention.detach().to(device=lam.device, dtype=lam.dtype)[members]  # (n, m, r)
    w = lam * att
    total = w.sum(dim=1, keepdim=True)
    return members, torch.where(total > 0, w / total.clamp_min(torch.finfo(w.dtype).tiny), lam)


def dense_interpolate(members: Tensor, weights: Tensor, x: Tensor, *, chunk_size: int | None = None) -> Tensor:
    """Mix per position: ``out[k, j] = Σ_i weights[k, i, j] · x[members[k, i], j]``.

    Args:
        members: (n, m) batch indices; weights: (n, m, r).
        x: (b, r, d) per-position values, or (b, d) values shared by all positions of an example
            (targets, teacher probabilities).
        chunk_size: generated rows per chunk (None: as many as keep intermediates under
            :data:`DENSE_CHUNK_ELEMENTS`). Chunking changes memory, not the result.

    Returns:
        (n, r, d) in x's dtype.
    """
    n, m, r = weights.shape
    shared = x.dim() == 2
    if shared:
        x = x.unsqueeze(1)  # (b, 1, d): broadcast over positions
    if x.dim() != 3 or x.shape[1] not in (1, r):
        raise ValueError(f"x must have shape (b, r={r}, d) or (b, d), got {tuple(x.shape)}")
    d = x.shape[2]
    w = weights.to(device=x.device, dtype=x.dtype)
    members = members.to(x.device)
    if chunk_size is None:
        chunk_size = max(1, DENSE_CHUNK_ELEMENTS // max(1, 2 * r * d))
    out = []
    for start in range(0, n, chunk_size):
        idx, wc = members[start : start + chunk_size], w[start : start + chunk_size]
        # Accumulate member by member: intermediates stay (chunk, r, d), never (chunk, m, r, d).
        acc = wc[:, 0, :, None] * x[idx[:, 0]]
        for i in range(1, m):
            acc = acc + wc[:, i, :, None] * x[idx[:, i]]
        out.append(acc)
    return out[0] if len(out) == 1 else torch.cat(out)


def dense_multimix(
    z: Tensor,
    targets: Tensor,
    *,
    n: int = 1000,
    m: int | None = None,
    alpha: float = 1.0,
    attention: Tensor | None = None,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Dense MultiMix: interpolate spatial embeddings and targets per position (SPEC §3).

    Args:
        z: spatial embeddings (b, d, *spatial): (b, d, L) sequences or (b, d, H, W) maps; r = L or H·W.
        targets: soft targets (b, K); every position inherits its example's label.
        n, m, alpha: as :func:`multimix`; λ is drawn per position.
        attention: None (uniform) or non-negative (b, *spatial); no gradient flows into it.
        chunk_size: see :func:`dense_interpolate`.

    Returns:
        ``(z_mixed (n, r, d), targets_mixed (n, r, K))``.
    """
    check_tensor(z, "z", min_dim=3)
    check_soft_targets(targets)  # rows of probabilities, as the mixers check
    check_same_batch(z, targets, "z")
    b, d = z.shape[:2]
    zr = z.flatten(2).transpose(1, 2)  # (b, r, d)
    r = zr.shape[1]
    if attention is not None:
        if attention.shape != (b, *z.shape[2:]):
            raise ValueError(f"attention must have shape {(b, *z.shape[2:])} (b, *spatial), got {tuple(attention.shape)}")
        if bool((attention < 0).any()):
            raise ValueError("attention must be non-negative")
        attention = attention.reshape(b, r)
    members, weights = dense_multimix_weights(
        b, r, n=n, m=m, alpha=alpha, attention=attention, generator=generator, device=z.device
    )
    return (
        dense_interpolate(members, weights, zr, chunk_size=chunk_size),
        dense_interpolate(members, weights, targets, chunk_size=chunk_size),
    )


def pooled_attention(z: Tensor) -> Tensor:
    """Attention of each position by its similarity to the example's pooled embedding.

    ``a[i, j] = softmax_j(<z_i[:, j], mean_j z_i[:, j]> / √d)``, for z (b, d, *spatial).
    Returns (b, *spatial), rows summing to 1 over positions, with no gradient.
    """
    with torch.no_grad():
        zr = z.flatten(2).float()  # (b, d, r)
        pooled = zr.mean(dim=2, keepdim=True)  # (b, d, 1)
        scores = (zr * pooled).sum(dim=1) / math.sqrt(zr.shape[1])
        return torch.softmax(scores, dim=1).reshape(z.shape[0], *z.shape[2:])


def cam_attention(z: Tensor, weight: Tensor, targets: Tensor) -> Tensor:
    """Class-activation attention: ``ReLU(w_y · z_i[:, j])`` for the true class, ℓ1-normalised.

    Args:
        z: (b, d, *spatial) embeddings; weight: (K, d) classifier weights; targets: (b, K) soft
            targets (the class vector is ``targets @ weight``: the true class's row for one-hot targets).

    Returns:
        (b, *spatial), rows summing to 1 over positions (uniform where no position is active),
        with no gradient.
    """
    with torch.no_grad():
        zr = z.flatten(2).float()  # (b, d, r)
        class_vec = targets.float() @ weight.float()  # (b, d)
        scores = torch.relu((zr * class_vec[:, :, None]).sum(dim=1))  # (b, r)
        total = scores.sum(dim=1, keepdim=True)
        uniform = torch.full_like(scores, 1.0 / scores.shape[1])
        att = torch.where(total > 0, scores / total.clamp_min(torch.finfo(scores.dtype).tiny), uniform)
        return att.reshape(z.shape[0], *z.shape[2:])


# --------------------------------------------------------------------------------------------
# loss


def soft_cross_entropy(logits: Tensor, targets: Tensor, *, reduction: str = "mean") -> Tensor:
    """Cross-entropy against soft targets: ``-Σ_c targets[:, c] · log_softmax(logits)[:, c]``.

    Args:
        logits: (N, K) unnormalised scores.
        targets: (N, K) probability rows (any floating dtype; cast to the logits' dtype).
        reduction: "mean" (over rows), "sum" or "none" (returns (N,)).
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none', got {reduction!r}")
    check_tensor(logits, "logits", min_dim=2)
    check_soft_targets(targets, values=False)
    if logits.shape != targets.shape:
        raise ValueError(
            f"logits and targets must have the same shape (N, K), got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    # torch's cross_entropy accepts class probabilities as targets (a fused log-softmax + dot).
    return F.cross_entropy(logits, targets.to(logits.dtype), reduction=reduction)
