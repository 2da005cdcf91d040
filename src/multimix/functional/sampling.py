"""Seedable samplers: λ ~ Beta(α, α) and rows ~ Dirichlet(α·1_m) (or per-member α), on the generator's device."""

from __future__ import annotations

import torch
from torch import Tensor

from multimix._validation import check_alpha, check_alpha_range, check_int


def _sampling_device(
    generator: torch.Generator | None, device: torch.device | str | None
) -> torch.device:
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
    # Private, but the only seedable gamma
    log_g = torch._standard_gamma(boosted, generator=generator).log()
    u = torch.rand(
        concentration.shape,
        generator=generator,
        device=concentration.device,
        dtype=concentration.dtype,
    )
    return torch.where(
        small,
        log_g + u.log() / concentration.clamp_min(torch.finfo(concentration.dtype).tiny),
        log_g,
    )


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
        valid = torch.isfinite(alpha).all() & (alpha >= 0).all()
        if alpha.device.type == "cpu":
            if not bool(valid):
                raise ValueError("alpha must hold finite values >= 0")
        else:  # reading the check back would wait for the device at every step: assert there
            torch._assert_async(valid, "alpha must hold finite values >= 0")
        conc = alpha.to(device=dev, dtype=work).expand(shape)
    else:
        conc = torch.full(shape, check_alpha(alpha), device=dev, dtype=work)
    # Beta(a, a) = G1 / (G1 + G2) = sigmoid(log G1 - log G2) for independent Gamma(a) draws.
    lam = torch.sigmoid(_log_gamma(conc, generator) - _log_gamma(conc, generator))
    # α = 0 (a per-example α from ConfMix, or a schedule's start) is the limit: λ ∈ {0, 1}, a fair coin.
    # Known on the host for a number; for a tensor of α the coin is always drawn, since asking the
    # device whether any α is 0 would wait for it.
    if isinstance(alpha, Tensor) or (conc.numel() and float(alpha) == 0):
        coin = torch.rand(shape, generator=generator, device=dev, dtype=work) < 0.5
        lam = torch.where(conc == 0, coin.to(work), lam)
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
    for α = 1 (the default everywhere) Gamma(1) is Exponential(1), which is much cheaper to draw;
    for α = 1 and m = 2 (the mixers' default), Dirichlet(1, 1) is (U, 1 − U) with U uniform.
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
    elif m == 2 and alpha == 1.0:
        # Dirichlet(1, 1) is (U, 1 − U) with U ~ Uniform(0, 1): one uniform per row, no logs.
        u = torch.rand(n, 1, generator=generator, device=dev, dtype=work)
        w = torch.cat([u, 1.0 - u], dim=1)
    elif alpha == 1.0:
        # Gamma(1) = Exponential(1) = -log U. Faster than exponential_() on CPU; clamping U away
        # from 0 keeps every draw finite (U < 1, so every draw is > 0 and no row sums to 0). The
        # signs cancel in the ratio, exactly: (-a) / (-s) == a / s in floating point.
        u = torch.rand(n, m, generator=generator, device=dev, dtype=work)
        log_u = u.clamp_min_(torch.finfo(work).tiny).log_()
        w = log_u.div_(log_u.sum(dim=1, keepdim=True))
    elif alpha >= 1.0:
        g = torch._standard_gamma(
            torch.full((n, m), alpha, device=dev, dtype=work), generator=generator
        )
        w = g / g.sum(dim=1, keepdim=True)
    else:
        # Small α: normalise in log space so rows never become 0/0 (see _log_gamma).
        w = torch.softmax(
            _log_gamma(torch.full((n, m), alpha, device=dev, dtype=work), generator), dim=1
        )
    return w.to(dtype or torch.float32)


def sample_dirichlet_by_member(
    n: int,
    m: int,
    alpha: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """:func:`sample_dirichlet`'s draw (the same values from the same generator state), transposed:
    (m, n), each member's n weights contiguous, which is how mixing member by member reads them.
    For the default m = 2, α = 1 it is built that way (no transposed copy)."""
    if m == 2 and check_alpha(alpha) == 1.0:
        u = torch.rand(
            check_int(n, "n"), generator=generator, device=_sampling_device(generator, device)
        )
        return torch.stack([u, 1.0 - u])
    return sample_dirichlet(n, m, alpha, generator=generator, device=device).t()


def sample_member_alphas(
    batch_size: int,
    alpha: tuple[float, float],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw each batch member's Dirichlet concentration uniformly in ``alpha = (low, high)``.

    The MultiMix paper's protocol redraws these every batch, α_i ~ U(low, high) for member i; a
    generated example mixing members T then has weights ~ Dirichlet(α_T) (:func:`sample_dirichlet_of`).

    Returns:
        Tensor (b,) float32 on the sampling device.
    """
    b = check_int(batch_size, "batch_size")
    low, high = check_alpha_range(alpha)
    dev = _sampling_device(generator, device)
    return torch.rand(b, generator=generator, device=dev).mul_(high - low).add_(low)


def sample_dirichlet_of(
    concentration: Tensor, *, dim: int = -1, generator: torch.Generator | None = None
) -> Tensor:
    """Dirichlet draws with the given concentrations: along ``dim``, one weight vector per slice.

    ``concentration`` holds every entry's α > 0 (e.g. the members' :func:`sample_member_alphas`
    gathered by tuple, (n, m)); the result has its shape, non-negative, summing to 1 along ``dim``.
    Normalised in log space (finite for any α > 0, as :func:`sample_dirichlet`'s small-α path).
    """
    if concentration.dtype not in (torch.float32, torch.float64):
        concentration = concentration.float()
    return torch.softmax(_log_gamma(concentration, generator), dim=dim)
