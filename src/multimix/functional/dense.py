"""Dense MultiMix: per-position weights, attention maps, and interpolation of (b, r, d) maps.

The formulas, attention options and references: docs/concepts/dense-multimix.md.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import Tensor

from multimix._deprecation import deprecated_alias
from multimix._validation import check_alpha_or_range, check_int, check_same_batch, check_tensor
from multimix.functional.multimix import (
    _FLOYD_MAX_M,
    _accumulation_dtype,
    _floyd_by_member,
    combine_members,
    multimix_alpha,
    sample_subsets,
)
from multimix.functional.sampling import (
    _sampling_device,
    sample_dirichlet_by_member,
    sample_dirichlet_of,
    sample_member_alphas,
)
from multimix.functional.targets import check_targets

#: Elements of intermediate tensors one chunk of Dense MultiMix may hold (64 Mi floats = 256 MiB).
DENSE_CHUNK_ELEMENTS = 1 << 26


def sample_dense_multimix_weights(
    batch_size: int,
    positions: int,
    *,
    n: int = 1000,
    m: int | None = 2,
    alpha: float | tuple[float, float] | None = None,
    attention: Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    member_major: bool = False,
) -> tuple[Tensor, Tensor]:
    """Sample the per-position interpolation of Dense MultiMix (docs/concepts/dense-multimix.md).

    Formerly ``dense_multimix_weights``.

    Generated example k mixes a tuple T_k of m distinct batch members; at position j its weights are
    ``w[k, :, j] ∝ attention[T_k, j] · λ[k, :, j]`` with ``λ[k, :, j] ~ Dirichlet(α·1_m)`` drawn per
    position, ℓ1-normalised over the tuple. Where the attention of every member is 0 at a position,
    the plain λ is used (uniform attention).

    Args:
        batch_size: b.
        positions: r, the number of spatial positions.
        n: generated examples; m: tuple length in [1, b], default 2 (None: whole batch); alpha: > 0,
            None (the default) for :func:`multimix_alpha` of the tuple length, or a range
            ``(low, high)`` of per-member concentrations (every position's weights ~ Dirichlet of
            the members' α). As :func:`sample_multimix_tuples`; in 0.1.0 the defaults were the
            whole batch at α = 1.
        attention: optional non-negative (b, r) weights of each position of each example.
        member_major: return the same draw transposed, ``(members (m, n), weights (m, n, r))``, each
            member's values contiguous (how the tuples are stored; no attention).

    Returns:
        ``(members int64 (n, m), weights float32 (n, m, r))``: weights sum to 1 over the m members.
    """
    b = check_int(batch_size, "batch_size")
    r = check_int(positions, "positions")
    n = check_int(n, "n")
    m = b if m is None else check_int(m, "m", low=1, high=b)
    alpha = multimix_alpha(m) if alpha is None else check_alpha_or_range(alpha)
    dev = _sampling_device(generator, device)
    # A range: each member's concentration, drawn before the tuples (sample_multimix_tuples' order)
    member_alpha = (
        sample_member_alphas(b, alpha, generator=generator, device=dev)
        if isinstance(alpha, tuple)
        else None
    )
    if member_major and attention is not None:
        raise ValueError(
            "member_major=True draws without attention; weight by attention in the (n, m, r) layout"
        )
    # Member-major storage, (m, n) and (m, n, r): mixing reads each member's indices and weights
    # contiguously, without a transposed copy; the (n, m) and (n, m, r) results are views of it.
    if m == b:
        members = torch.arange(b, device=dev)[:, None].expand(b, n)
    elif m <= _FLOYD_MAX_M:
        members = _floyd_by_member(n, b, m, generator, dev)
    else:
        members = sample_subsets(n, b, m, generator=generator, device=dev).t()
    if member_alpha is None:
        lam = sample_dirichlet_by_member(
            n * r, m, cast(float, alpha), generator=generator, device=dev
        )
        lam = lam.view(m, n, r)
    else:  # every position's weights ~ Dirichlet(the members' α), over the m members (dim 0)
        concentration = member_alpha[members][:, :, None].expand(m, n, r)
        lam = sample_dirichlet_of(concentration, dim=0, generator=generator)
    if device is not None and torch.device(device) != dev:
        members, lam = members.to(device), lam.to(device)
    if member_major:
        return members, lam
    members, lam = members.t(), lam.transpose(0, 1)
    if attention is None:
        return members, lam
    if attention.shape != (b, r):
        raise ValueError(
            f"attention must have shape (b, r) = ({b}, {r}), got {tuple(attention.shape)}"
        )
    att = attention.detach().to(device=lam.device, dtype=lam.dtype)[members]  # (n, m, r)
    w = lam * att
    total = w.sum(dim=1, keepdim=True)
    return members, torch.where(total > 0, w / total.clamp_min(torch.finfo(w.dtype).tiny), lam)


#: Up to this tuple length, feature-major dense_interpolate gathers all members at once (see below),
#: and :func:`dense_mix_logits_and_labels` applies.
FUSED_MAX_M = 8


class _ClassMajorMix(torch.autograd.Function):
    """``out[:, k, j] = Σ_i w[i, k, j] · x[idx[i, k], :, j]`` for channels-first x (b, d, r), with the
    result in class-major storage (d, c, r).

    Forward: one gather of the m members' whole (d, r) rows (contiguous copies), then one combination
    written straight into the class-major result. Backward: the members' gradients are written
    row-major, (m·c, d, r), and added into x's rows with one ``index_add_`` along the first axis
    (autograd of a gather along the middle axis of (d, b, r) would add one (d, r) slice per index:
    slow on the CPU).
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, idx: Tensor, w: Tensor, dtype: torch.dtype, as_rows: bool = False
    ) -> Tensor:
        m, c = idx.shape
        b, d, r = x.shape
        flat_idx = idx.reshape(-1)
        gathered = x.reshape(b, d * r).index_select(0, flat_idx).view(m, c, d, r)
        if gathered.dtype != dtype:
            gathered = gathered.to(dtype)
        if ctx is not None:
            ctx.save_for_backward(flat_idx, w)
            ctx.b, ctx.x_dtype, ctx.as_rows = b, x.dtype, as_rows
        out = torch.empty((d, c, r), dtype=dtype, device=x.device)
        rows = out.permute(1, 0, 2)  # (c, d, r) view: written in place
        if m == 2:  # w0·a + (1 − w0)·b, one pass (as combine_members)
            torch.lerp(gathered[1], gathered[0], w[0][:, None, :], out=rows)
        else:
            torch.mul(gathered[0], w[0][:, None, :], out=rows)
            for i in range(1, m):
                rows.addcmul_(gathered[i], w[i][:, None, :])
        # as_rows: the (c·r, d) rows, a view of the same storage, handed out by this node itself (no
        # view nodes after it in the graph).
        return out.view(d, c * r).t() if as_rows else out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None, None]:
        flat_idx, w = ctx.saved_tensors
        m, c, r = w.shape
        # (c·r, d) → (d, c, r); a view when the gradient is class-major too (the loss's)
        if ctx.as_rows:
            grad = grad.t().reshape(-1, c, r)
        d = grad.shape[0]
        rows = grad.permute(1, 0, 2)  # (c, d, r)
        per_member = torch.empty((m, c, d, r), dtype=w.dtype, device=grad.device)
        if m == 2:  # the lerp: weights w0 and 1 − w0
            torch.mul(rows, w[0][:, None, :], out=per_member[0])
            torch.sub(rows, per_member[0], out=per_member[1])
        else:
            for i in range(m):
                torch.mul(rows, w[i][:, None, :], out=per_member[i])
        grad_x = torch.zeros((ctx.b, d, r), dtype=ctx.x_dtype, device=grad.device)
        grad_x.index_add_(0, flat_idx, per_member.view(m * c, d, r).to(ctx.x_dtype))
        return grad_x, None, None, None, None


def dense_interpolate(
    members: Tensor,
    weights: Tensor,
    x: Tensor,
    *,
    chunk_size: int | None = None,
    class_major: bool | None = None,
) -> Tensor:
    """Mix per position: ``out[k, j] = Σ_i weights[k, i, j] · x[members[k, i], j]``.

    Args:
        members: (n, m) batch indices; weights: (n, m, r), summing to 1 over the m members (as
            :func:`sample_dense_multimix_weights` draws them; with m = 2 the second is taken as 1 − the first).
        x: (b, r, d) per-position values, or (b, d) values shared by all positions of an example
            (targets, teacher probabilities).
        chunk_size: generated rows per chunk (None: as many as keep intermediates under
            ``DENSE_CHUNK_ELEMENTS``). Chunking changes memory, not the result.
        class_major: lay the result out class-major (feature-major): a (n, r, d) view of (d, n, r)
            storage, so that ``result.reshape(n * r, d).t()`` is contiguous. None (the default)
            follows x's layout: class-major when x is itself a view of (d, b, r) storage (e.g.
            ``t.permute(1, 2, 0)``, or (d, b) for shared values), contiguous otherwise.
            Class-major keeps every elementwise step a long contiguous loop when d is small (a few
            classes, on the CPU); see :class:`multimix.DenseMultiMix`, which passes the channels-first
            logits of a 1×1 convolution, (b, d, r) seen as (b, r, d), with ``class_major=True``.

    Returns:
        (n, r, d) in x's dtype (half precision is accumulated in float32).
    """
    n, m, r = weights.shape
    if x.dim() == 2:
        x = x.unsqueeze(1)  # (b, 1, d): broadcast over positions
    if x.dim() != 3 or x.shape[1] not in (1, r):
        raise ValueError(f"x must have shape (b, r={r}, d) or (b, d), got {tuple(x.shape)}")
    b, rx, d = x.shape
    dtype = _accumulation_dtype(weights.dtype, x.dtype)
    # (m, n, r): each member's weights contiguous, so that elementwise steps coalesce over n·r.
    w = weights.to(device=x.device, dtype=dtype).transpose(0, 1).contiguous()
    members = members.to(x.device)
    if chunk_size is None:
        chunk_size = max(1, DENSE_CHUNK_ELEMENTS // max(1, 2 * r * d))
    if class_major is None:
        class_major = d > 1 and not x.is_contiguous() and x.permute(2, 0, 1).is_contiguous()
    out = []
    if class_major and m <= FUSED_MAX_M:
        # Channels-first values (b, d, r): whole rows are gathered, and the result is written class-major.
        x_cf = x.transpose(1, 2)
        if rx != r:  # values shared by all positions: spread them first (b·r·d ≪ n·r·d)
            x_cf = x_cf.expand(b, d, r)
        x_cf = x_cf.contiguous()  # no copy for a 1×1 convolution's output
        chunk_size = min(chunk_size, max(1, DENSE_CHUNK_ELEMENTS // ((m + 1) * r * d)))
        for start in range(0, n, chunk_size):
            idx, wc = members[start : start + chunk_size].t(), w[:, start : start + chunk_size]
            if torch.is_grad_enabled() and x_cf.requires_grad:
                # Function.apply is unannotated in torch; the result is forward's Tensor.
                out.append(_ClassMajorMix.apply(x_cf, idx, wc, dtype))  # type: ignore[no-untyped-call]
            else:  # no gradient (targets): the same forward, without autograd's bookkeeping
                out.append(_ClassMajorMix.forward(None, x_cf, idx, wc, dtype))
        mixed = out[0] if len(out) == 1 else torch.cat(out, dim=1)
        return mixed.to(x.dtype).permute(1, 2, 0)
    if class_major:  # long tuples: (d, c, r) values times (c, r) weights, member by member
        xt = x.permute(2, 0, 1)  # (d, b, rx)
        xt = (xt.expand(d, b, r) if rx != r else xt).contiguous()
        for start in range(0, n, chunk_size):
            idx, wc = members[start : start + chunk_size].t(), w[:, start : start + chunk_size]
            # B023: combine_members calls both lambdas before it returns, so they see this chunk's idx and wc.
            out.append(
                combine_members(lambda i: xt.index_select(1, idx[i]).to(dtype), lambda i: wc[i], m)  # noqa: B023
            )
        mixed = out[0] if len(out) == 1 else torch.cat(out, dim=1)
        return mixed.to(x.dtype).permute(1, 2, 0)
    # Accumulate member by member: intermediates stay (chunk, r, d), never (chunk, m, r, d).
    # index_select, not x[idx]: its backward is index_add_, much cheaper on CPU than index_put_.
    flat = x.reshape(b, rx * d)
    for start in range(0, n, chunk_size):
        idx, wc = members[start : start + chunk_size].t(), w[:, start : start + chunk_size, :, None]
        c = idx.shape[1]
        # B023: combine_members calls both lambdas before it returns, so they see this chunk's idx, c and wc.
        out.append(
            combine_members(
                lambda i: flat.index_select(0, idx[i]).view(c, rx, d).to(dtype),  # noqa: B023
                lambda i: wc[i],  # noqa: B023
                m,
            )
        )
    mixed = out[0] if len(out) == 1 else torch.cat(out)
    return mixed.to(x.dtype)


def dense_interpolate_labels(
    members: Tensor,
    weights: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    dtype: torch.dtype = torch.float32,
    class_major: bool = False,
) -> Tensor:
    """The per-position mixed targets of integer labels.

    ``out[k, j] = Σ_i weights[k, i, j] · e_{labels[members[k, i]]}``.

    Equal to ``dense_interpolate(members, weights, one_hot(labels, num_classes))`` up to float
    rounding, without one-hot rows: the n·m·r weights are added into zeros at their members' labels
    (one scatter of n·m·r values instead of gathering n·m·r·K and combining them).

    Args:
        members: (n, m) batch indices; weights: (n, m, r), as :func:`sample_dense_multimix_weights` draws them.
        labels: int64 (b,) class indices in ``[0, num_classes)`` (not checked here).
        num_classes: K.
        dtype: floating dtype of the result.
        class_major: lay the result out as :func:`dense_interpolate` does for feature-major values:
            a (n, r, K) view of (K, n, r) storage (see :class:`multimix.DenseMultiMix`).

    Returns:
        (n, r, K), rows on the simplex, on the labels' device.
    """
    n, m, r = weights.shape
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(
            f"labels must be integer class indices of shape (b,), got {labels.dtype} {tuple(labels.shape)}"
        )
    member_labels = labels.take(members.to(labels.device))  # (n, m)
    w = weights.to(device=labels.device, dtype=dtype)
    if class_major:
        out = torch.zeros(num_classes, n, r, dtype=dtype, device=labels.device)
        out.scatter_add_(0, member_labels.t()[:, :, None].expand(m, n, r), w.transpose(0, 1))
        return out.permute(1, 2, 0)
    out = torch.zeros(n, r, num_classes, dtype=dtype, device=labels.device)
    return out.scatter_add_(2, member_labels[:, None, :].expand(n, r, m), w.transpose(1, 2))


def dense_mix_logits_and_labels(
    logits: Tensor, members: Tensor, weights: Tensor, labels: Tensor, num_classes: int
) -> tuple[Tensor, Tensor]:
    """Dense MultiMix's mixing of per-position logits and integer labels, in one pass, class-major.

    The same values as ``dense_interpolate(members, weights, logits.transpose(1, 2), class_major=True)``
    and ``dense_interpolate_labels(members, weights, labels, K, class_major=True)``, each reshaped to
    (n·r, K), with a fraction of their operations: for small maps on a CPU a training step's cost
    is mostly per operation, not per value (:class:`multimix.DenseMultiMix` takes this path on the
    CPU for fewer than 16 classes and short tuples). No chunking: the caller bounds n·m·r·K.

    Args:
        logits: (b, K, r) channels-first per-position logits (a 1×1 convolution's output).
        members: (m, n) and weights (m, n, r), member-major, m <= 8: as
            ``sample_dense_multimix_weights(..., member_major=True)`` draws them (the transposes of its
            default results).
        labels: int64 (b,) class indices in ``[0, num_classes)``.
        num_classes: K.

    Returns:
        ``(mixed logits, mixed targets)``, each (n·r, K): views of class-major (K, n·r) storage.
    """
    m, n, r = weights.shape
    if m > FUSED_MAX_M or members.shape != (m, n) or logits.dim() != 3 or logits.shape[2] != r:
        raise ValueError(
            f"dense_mix_logits_and_labels needs member-major members (m, n), weights (m, n, r) "
            f"with m <= {FUSED_MAX_M}, and logits (b, K, r); got members {tuple(members.shape)}, "
            f"weights {tuple(weights.shape)}, logits {tuple(logits.shape)}"
        )
    # Function.apply is unannotated in torch; the result is forward's Tensor.
    mixed = _ClassMajorMix.apply(logits, members, weights, logits.dtype, True)  # type: ignore[no-untyped-call]
    targets = torch.zeros(num_classes, n * r, dtype=weights.dtype, device=labels.device)
    targets.view(num_classes, n, r).scatter_add_(
        0, labels.take(members)[:, :, None].expand(m, n, r), weights
    )
    return mixed, targets.t()


#: The ``layout=`` values: where a spatial embedding's channels are (conv nets: first; tokens: last).
LAYOUTS = ("channels_first", "channels_last")


def check_layout(layout: str, prefix_tokens: int) -> None:
    """Raise ValueError unless ``layout`` is one of :data:`LAYOUTS` and ``prefix_tokens`` an integer >= 0."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, int) or prefix_tokens < 0:
        raise ValueError(f"prefix_tokens must be an integer >= 0, got {prefix_tokens!r}")


def positions_of(z: Tensor, *, layout: str = "channels_first", prefix_tokens: int = 0) -> Tensor:
    """The positions of a spatial embedding as rows: (b, r, d).

    Args:
        z: ``channels_first`` ``(b, d, *spatial)``, as conv nets produce, or ``channels_last``
            ``(b, *positions, d)``, as transformers produce (tokens (b, T, d)).
        prefix_tokens: leading positions that are not spatial (a class token, register tokens), left out.
    """
    check_layout(layout, prefix_tokens)
    if z.dim() < 3:
        raise ValueError(
            f"a spatial embedding needs at least 3 dimensions, (b, d, *spatial) or (b, *positions, d); "
            f"got shape {tuple(z.shape)}"
        )
    rows = (
        z.flatten(2).transpose(1, 2)
        if layout == "channels_first"
        else z.reshape(z.shape[0], -1, z.shape[-1])
    )
    if prefix_tokens >= rows.shape[1]:
        raise ValueError(
            f"prefix_tokens={prefix_tokens} leaves no position of the {rows.shape[1]} in shape "
            f"{tuple(z.shape)} ({layout})"
        )
    return rows[:, prefix_tokens:] if prefix_tokens else rows


def dense_multimix(
    z: Tensor,
    targets: Tensor,
    *,
    n: int = 1000,
    m: int | None = 2,
    alpha: float | tuple[float, float] | None = None,
    attention: Tensor | None = None,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    layout: str = "channels_first",
    prefix_tokens: int = 0,
    multi_label: bool = False,
) -> tuple[Tensor, Tensor]:
    """Dense MultiMix: interpolate spatial embeddings and targets per position.

    The formulas, attention options and references: docs/concepts/dense-multimix.md.

    Args:
        z: spatial embeddings: ``channels_first`` ``(b, d, *spatial)``, (b, d, L) sequences or (b, d, H, W)
            maps, or ``channels_last`` ``(b, *positions, d)``, e.g. a transformer's tokens (b, T, d).
        targets: soft targets (b, K); every position inherits its example's label.
        n, m, alpha: as :func:`multimix` (default pairs, α = :func:`multimix_alpha` of the tuple
            length; in 0.1.0 the whole batch at α = 1); λ is drawn per position. With its defaults
            this is the draw of :class:`multimix.DenseMultiMix` with its defaults.
        attention: None (uniform) or non-negative (b, r) over the r positions kept (or ``(b, *spatial)``
            for channels_first maps); no gradient flows into it.
        chunk_size: see :func:`dense_interpolate`.
        layout: ``"channels_first"`` or ``"channels_last"``.
        prefix_tokens: leading positions left out (a class token), see ``positions_of``.
        multi_label: the targets are multi-label, entries in [0, 1] whose rows need not sum to 1
            (from ``one_hot(..., multi_label=True)``); they are mixed with the same weights.

    Returns:
        ``(z_mixed (n, r, d), targets_mixed (n, r, K))``.
    """
    check_tensor(z, "z", min_dim=3)
    # rows of probabilities (or of per-class probabilities), as the mixers check
    check_targets(targets, multi_label=multi_label)
    check_same_batch(z, targets, "z")
    zr = positions_of(z, layout=layout, prefix_tokens=prefix_tokens)  # (b, r, d)
    b, r = zr.shape[:2]
    if attention is not None:
        if attention.numel() != b * r or attention.shape[0] != b:
            raise ValueError(
                f"attention must hold {r} values per example (b, r), got shape {tuple(attention.shape)}"
            )
        if bool((attention < 0).any()):
            raise ValueError("attention must be non-negative")
        attention = attention.reshape(b, r)
    members, weights = sample_dense_multimix_weights(
        b, r, n=n, m=m, alpha=alpha, attention=attention, generator=generator, device=z.device
    )
    return (
        dense_interpolate(members, weights, zr, chunk_size=chunk_size),
        dense_interpolate(members, weights, targets, chunk_size=chunk_size),
    )


def pooled_attention(z: Tensor) -> Tensor:
    """Attention of each position by its similarity to the example's pooled embedding.

    ``a[i, j] = softmax_j(<z_i[:, j], mean_j z_i[:, j]> / √d)``, for z ``(b, d, *spatial)``.
    Returns ``(b, *spatial)``, rows summing to 1 over positions, with no gradient.
    """
    with torch.no_grad():
        zr = z.flatten(2).float()  # (b, d, r)
        pooled = zr.mean(dim=2, keepdim=True)  # (b, d, 1)
        scores = (zr * pooled).sum(dim=1) / math.sqrt(zr.shape[1])
        return torch.softmax(scores, dim=1).reshape(z.shape[0], *z.shape[2:])


def cam_attention(z: Tensor, weight: Tensor, targets: Tensor) -> Tensor:
    """Class-activation attention: ``ReLU(w_y · z_i[:, j])`` for the true class, ℓ1-normalised.

    Args:
        z: ``(b, d, *spatial)`` embeddings; weight: (K, d) classifier weights; targets: (b, K) soft
            targets (the class vector is ``targets @ weight``: the true class's row for one-hot targets).

    Returns:
        ``(b, *spatial)``, rows summing to 1 over positions (uniform where no position is active),
        with no gradient.
    """
    with torch.no_grad():
        zr = z.flatten(2).float()  # (b, d, r)
        class_vec = targets.float() @ weight.float()  # (b, d)
        scores = torch.relu((zr * class_vec[:, :, None]).sum(dim=1))  # (b, r)
        total = scores.sum(dim=1, keepdim=True)
        uniform = torch.full_like(scores, 1.0 / scores.shape[1])
        att = torch.where(
            total > 0, scores / total.clamp_min(torch.finfo(scores.dtype).tiny), uniform
        )
        return att.reshape(z.shape[0], *z.shape[2:])


dense_multimix_weights = deprecated_alias(
    sample_dense_multimix_weights, "dense_multimix_weights", where="multimix.functional"
)
