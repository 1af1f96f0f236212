"""Feature maps ``x -> phi(x)`` for normalised linear attention.

Every map acts on the last dimension of a ``[..., D]`` tensor and returns fp32 features ``[..., F]``. NaLa's maps and
every baseline's live here so the attention forms in :mod:`nalaformer.ops.linear_attn` are shared by all methods.

NaLa (the released code's defaults, docs/method.md §3):

- query: ``n = ||q||``, ``q_hat = q / n``, ``p = lam * (tau + tanh(n / temperature))``,
  ``phi_q = [relu(q_hat)^p, relu(-q_hat)^p]`` (the exponent grows with the query norm: norm awareness);
- key: ``phi_k = [relu(k)^lam, relu(-k)^lam]``.

The sign split keeps same-sign products and drops opposite-sign ones. The paper's cosine-inhibit variant
(Eq. 16-17) instead multiplies the magnitudes by ``[cos(theta), sin(theta)]`` with
``theta = (pi / 4) * tanh(alpha * x_hat)``; as ``alpha`` grows it approaches the sign split. The pair is stored
rotated by 45 degrees, ``[cos(pi/4 - theta), sin(pi/4 - theta)]`` (an orthogonal change of feature basis, so every
product and kernel is the same): both entries then lie in ``[0, 1]``, each term of a query-key product is
non-negative, and opposite-sign dimensions give exactly 0 instead of the rounding residue of
``cos(theta_q) cos(theta_k) + sin(theta_q) sin(theta_k)`` at ``theta_q - theta_k = -pi/2``, which in fp32 could make
kernel rows sum to ~0 and the output leave the values' range.

The defaults below are the released code's; every signature with these options reads them from here.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as F

from nalaformer.ops.fused_features import (
    SignSplitOptions,
    fused_path_applies,
    l2_norm,
    reference_features,
    safe_pow,
    sign_split_features,
)
from nalaformer.ops.validation import check_choice, check_float_tensor, upcast

INHIBIT_MODES = ("sign", "cosine", "none")

NALA_LAM = 3.0  # exponent scale lambda (and the key exponent)
NALA_TAU = 0.5  # exponent offset: p = lam * (tau + tanh(||q|| / T)) lies in [lam * tau, lam * (tau + 1))
NALA_TEMPERATURE = 1.0  # T: the released code has none
NALA_INHIBIT = "sign"
NALA_ALPHA = 20.0  # sharpness of the cosine-inhibit angle map
NALA_EPS = 1e-6  # floor of ||q|| (and of ||k|| in the cosine angle map)
NALA_CONSTANT_POWER = NALA_LAM * (NALA_TAU + 1.0)  # the Table-5 ablations' constant exponent: NaLa's ceiling


def _check_finite(name: str, value: object, *, minimum: float | None, inclusive: bool = False) -> float:
    """``value`` as a float if it is a finite real above ``minimum`` (``>=`` with ``inclusive``; None: no bound)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    below = minimum is not None and (value < minimum if inclusive else value <= minimum)
    if not math.isfinite(value) or below:
        bound = "" if minimum is None else f" and {'>=' if inclusive else '>'} {minimum:g}"
        raise ValueError(f"{name} must be {'finite' if bound else 'a finite number'}{bound}, got {value!r}")
    return value


def check_nala_options(
    lam: float = NALA_LAM,
    tau: float = NALA_TAU,
    temperature: float = NALA_TEMPERATURE,
    power: float | None = None,
    alpha: float = NALA_ALPHA,
    eps: float = NALA_EPS,
) -> None:
    """Reject NaLa options that would give silent NaN or a meaningless map, naming the option and the value.

    ``lam``, ``temperature``, ``alpha`` and (when given) ``power`` must be finite and ``> 0`` (a power ``<= 0``
    turns the sharpening into a flattening and makes zero components infinite); ``tau`` finite; ``eps`` finite and
    ``>= 0``.
    """
    _check_finite("lam", lam, minimum=0.0)
    _check_finite("tau", tau, minimum=None)
    _check_finite("temperature", temperature, minimum=0.0)
    _check_finite("alpha", alpha, minimum=0.0)
    _check_finite("eps", eps, minimum=0.0, inclusive=True)
    if power is not None:
        _check_finite("power", power, minimum=0.0)


def check_key_range(k: torch.Tensor, lam: float, compute_dtype: torch.dtype = torch.float32) -> None:
    """Raise when finite keys are so large that ``|k|^lam`` summed over the sequence overflows ``compute_dtype``.

    Past that point every output of the sequence would be NaN (inf / inf) without a word. The bound is
    ``(max / T)^(1 / lam)`` for ``T = k.shape[-3]`` tokens (about 1.7e12 at T = 64, lam = 3, fp32). Keys with NaN
    or inf pass (their tokens' outputs are non-finite, as with any other map). One reduction over ``k``.
    """
    if torch.compiler.is_compiling() or k.numel() == 0 or k.device.type == "meta":
        return
    tokens = k.shape[-3] if k.dim() >= 3 else 1
    limit = (torch.finfo(compute_dtype).max / max(tokens, 1)) ** (1.0 / lam)
    largest = float(k.detach().abs().amax())
    if math.isfinite(largest) and largest > limit:
        raise ValueError(
            f"k: largest |k| = {largest:.3g} exceeds {limit:.3g}, past which |k|^lam summed over {tokens} tokens "
            f"overflows {compute_dtype} (lam={lam:g}); scale the keys down or normalise them"
        )


def _split(magnitude: torch.Tensor, direction: torch.Tensor, inhibit: str, alpha: float) -> torch.Tensor:
    """Turn per-dimension magnitudes into features: sign split, cosine inhibit, or positive part only."""
    if inhibit == "sign":
        zero = torch.zeros_like(magnitude)
        return torch.cat([torch.where(direction > 0, magnitude, zero), torch.where(direction < 0, magnitude, zero)], -1)
    if inhibit == "cosine":
        # [cos, sin] of pi/4 - theta in [0, pi/2] (see the module docstring); the clamp removes the rounding of
        # cos(pi/2) (fp32: -4.4e-8) so that both entries are exactly >= 0.
        angle = (math.pi / 4) * (1.0 - torch.tanh(alpha * direction))
        cos, sin = torch.cos(angle).clamp_min(0.0), torch.sin(angle).clamp_min(0.0)
        return torch.cat([magnitude * cos, magnitude * sin], dim=-1)
    return torch.where(direction > 0, magnitude, torch.zeros_like(magnitude))


def nala_exponent(
    q_norm: torch.Tensor, lam: float = NALA_LAM, tau: float = NALA_TAU, temperature: float = NALA_TEMPERATURE
) -> torch.Tensor:
    """NaLa's norm-aware exponent ``p = lam * (tau + tanh(||q|| / temperature))`` (docs/method.md §3.1)."""
    return lam * (tau + torch.tanh(q_norm / temperature))


def nala_query_map(
    q: torch.Tensor,
    lam: float = NALA_LAM,
    tau: float = NALA_TAU,
    temperature: float = NALA_TEMPERATURE,
    eps: float = NALA_EPS,
    inhibit: str = NALA_INHIBIT,
    alpha: float = NALA_ALPHA,
    power: float | None = None,
) -> torch.Tensor:
    """NaLa's query feature map.

    Args:
        q (torch.Tensor): queries ``[..., D]``, any float dtype (computed in fp32).
        lam (float): the exponent scale lambda. Default: 3.0 (released code).
        tau (float): the exponent offset. Default: 0.5.
        temperature (float): divides ``||q||`` inside tanh; values > 1 delay the exponent's saturation
            (our extension for studying it). Default: 1.0 (released code).
        eps (float): floor of ``||q||`` so that a zero query gives zero features and finite gradients. Default: 1e-6.
        inhibit (str): ``"sign"`` (released code: ``[relu(q_hat)^p, relu(-q_hat)^p]``), ``"cosine"`` (paper Eq. 16:
            ``|q_hat|^p * [cos(theta), sin(theta)]``, ``theta = pi/4 * tanh(alpha * q_hat)``, stored in the rotated
            basis of the module docstring) or ``"none"``
            (``relu(q_hat)^p`` only, ``D`` features; an ablation). Default: "sign".
        alpha (float): sharpness of the cosine-inhibit angle map. Default: 20.0.
        power (float, optional): a constant exponent instead of the norm-aware one (the Table-5 ablation rows).
            Default: None.

    Returns:
        torch.Tensor: fp32 features ``[..., 2D]`` (``[..., D]`` for ``inhibit="none"``). With the sign split and an
        exponent > 1, ``[B, T, H, D]`` inputs give features stored head-major (a ``[B, T, H, 2D]`` view of
        ``[B, H, T, 2D]`` memory, the order the attention matmuls read); use ``reshape``, not ``view``, to flatten.
    """
    check_float_tensor("q", q)
    check_choice("inhibit", inhibit, INHIBIT_MODES)
    check_nala_options(lam, tau, temperature, power, alpha, eps)
    q = upcast(q)
    if inhibit == "sign" and fused_path_applies(lam, tau, power, normalise=True):
        return sign_split_features(q, SignSplitOptions(True, lam, tau, temperature, power, eps))
    norm = l2_norm(q, eps)
    q_hat = q / norm
    p = nala_exponent(norm, lam, tau, temperature) if power is None else power
    return _split(safe_pow(q_hat.abs(), p), q_hat, inhibit, alpha)


def nala_key_map(
    k: torch.Tensor,
    lam: float = NALA_LAM,
    inhibit: str = NALA_INHIBIT,
    alpha: float = NALA_ALPHA,
    eps: float = NALA_EPS,
) -> torch.Tensor:
    """NaLa's key feature map: ``[relu(k)^lam, relu(-k)^lam]`` (the released code's sign split of ``k**3``).

    Args:
        k (torch.Tensor): keys ``[..., D]``, any float dtype (computed in fp32).
        lam (float): the key exponent. Default: 3.0.
        inhibit (str): ``"sign"``, ``"cosine"`` (``|k|^lam * [cos(theta), sin(theta)]`` with
            ``theta = pi/4 * tanh(alpha * k / ||k||)``) or ``"none"`` (``relu(k)^lam``). Default: "sign".
        alpha (float): sharpness of the cosine-inhibit angle map. Default: 20.0.
        eps (float): floor of ``||k||`` in the cosine angle map. Default: 1e-6.

    Returns:
        torch.Tensor: fp32 features ``[..., 2D]`` (``[..., D]`` for ``inhibit="none"``). With the sign split and an
        exponent > 1, ``[B, T, H, D]`` inputs give features stored head-major (a ``[B, T, H, 2D]`` view of
        ``[B, H, T, 2D]`` memory, the order the attention matmuls read); use ``reshape``, not ``view``, to flatten.
    """
    check_float_tensor("k", k)
    check_choice("inhibit", inhibit, INHIBIT_MODES)
    check_nala_options(lam, alpha=alpha, eps=eps)
    k = upcast(k)
    check_key_range(k, lam, k.dtype)
    if inhibit == "sign" and fused_path_applies(lam, 0.0, None, normalise=False):
        return sign_split_features(k, SignSplitOptions(False, lam, eps=eps))
    direction = k / l2_norm(k, eps) if inhibit == "cosine" else k
    return _split(safe_pow(k.abs(), lam), direction, inhibit, alpha)


def reference_sign_split_power(
    x: torch.Tensor, normalise: bool, lam: float, tau: float, temperature: float, power: float | None, eps: float
) -> torch.Tensor:
    """The sign-split NaLa maps written out with autograd-tracked ops: the oracle of :class:`SignSplitPower`.

    ``normalise=True`` is :func:`nala_query_map` (``x / ||x||`` to the norm-aware or constant power), ``False``
    :func:`nala_key_map` (``|x|^lam``). ``x [..., D]`` fp32 or fp64; returns ``[..., 2D]`` in its dtype.
    """
    return reference_features(x, SignSplitOptions(normalise, lam, tau, temperature, power, eps))


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """``elu(x) + 1`` (Katharopoulos et al., 2020), fp32 ``[..., D]``."""
    return F.elu(upcast(x)) + 1.0


def relu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """``relu(x)`` (EfficientViT-style ReLU linear attention), fp32 ``[..., D]``."""
    return F.relu(upcast(x))


def focused_feature_map(
    x: torch.Tensor, scale: torch.Tensor | None = None, power: float = 3.0, eps: float = 1e-6
) -> torch.Tensor:
    """FLatten's focused map: ``y = (relu(x) + eps) / softplus(scale)``, ``phi = ||y|| * y^p / ||y^p||``.

    Args:
        x (torch.Tensor): ``[..., D]``.
        scale (torch.Tensor, optional): learnable per-channel scale, broadcastable to ``[..., D]``. Default: None.
        power (float): the focusing power. Default: 3.0.
        eps (float): added after the ReLU. Default: 1e-6.
    """
    y = F.relu(upcast(x)) + eps
    if scale is not None:
        y = y / F.softplus(scale.to(y.dtype))
    y_norm = y.norm(dim=-1, keepdim=True)
    y_pow = y.pow(power)
    return y_pow * (y_norm / y_pow.norm(dim=-1, keepdim=True))


def polarity_feature_maps(
    q: torch.Tensor, k: torch.Tensor, power: torch.Tensor | float, scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PolaFormer's polarity-aware maps.

    With ``x <- x / softplus(scale)`` and ``x± = relu(±x)^power`` returns ``(phi_same(q), phi_opposite(q), phi(k))``
    where ``phi_same(q) = [q+, q-]``, ``phi_opposite(q) = [q-, q+]`` and ``phi(k) = [k+, k-]``, each ``[..., 2D]``.
    The same-sign stream attends with one half of the values and the opposite-sign stream with the other.

    Args:
        q, k (torch.Tensor): ``[..., D]``.
        power (torch.Tensor | float): the (learnable) power, broadcastable to ``[..., D]``.
        scale (torch.Tensor, optional): learnable per-channel scale. Default: None.
    """
    q, k = upcast(q), upcast(k)
    if scale is not None:
        q = q / F.softplus(scale.to(q.dtype))
        k = k / F.softplus(scale.to(k.dtype))
    q_pos, q_neg = safe_pow(F.relu(q), power), safe_pow(F.relu(-q), power)
    k_pos, k_neg = safe_pow(F.relu(k), power), safe_pow(F.relu(-k), power)
    return torch.cat([q_pos, q_neg], -1), torch.cat([q_neg, q_pos], -1), torch.cat([k_pos, k_neg], -1)


def cosformer_feature_map(x: torch.Tensor, positions: torch.Tensor, max_len: int | torch.Tensor) -> torch.Tensor:
    """cosFormer's re-weighted map ``[relu(x) * sin(pi i / 2M), relu(x) * cos(pi i / 2M)]``.

    The product of two such features is ``relu(q)·relu(k) * cos(pi (i - j) / 2M)``.

    Args:
        x (torch.Tensor): ``[B, T, H, D]``.
        positions (torch.Tensor): token positions ``[T]`` or ``[B, T]``.
        max_len (int | torch.Tensor): ``M``; positions must stay below it (non-causal: the sequence length).
    """
    phi = F.relu(upcast(x))
    # [T] -> [T, 1, 1] and [B, T] -> [B, T, 1, 1], broadcasting against [B, T, H, D]
    angle = (math.pi / 2) * positions.to(phi.dtype) / max_len
    angle = angle.reshape(*angle.shape, 1, 1)
    return torch.cat([phi * torch.sin(angle), phi * torch.cos(angle)], dim=-1)


def hedgehog_feature_map(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Hedgehog's learnable softmax map ``[softmax(W x + b), softmax(-(W x + b))]`` over the feature dimension.

    Args:
        x (torch.Tensor): ``[B, T, H, D]``.
        weight (torch.Tensor): per-head projection ``[H, F, D]``.
        bias (torch.Tensor, optional): ``[H, F]``. Default: None.

    Returns:
        torch.Tensor: fp32 ``[B, T, H, 2F]``.
    """
    x = upcast(x)
    z = torch.einsum("bthd,hfd->bthf", x, weight.to(x.dtype))
    if bias is not None:
        z = z + bias.to(z.dtype)
    return torch.cat([torch.softmax(z, dim=-1), torch.softmax(-z, dim=-1)], dim=-1)
