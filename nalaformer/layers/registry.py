"""Build any token mixer by name: ``build_attention(name, dim, num_heads, causal=..., layout=..., **options)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nalaformer.layers.base import TokenMixer, check_form
from nalaformer.layers.feature_maps import (
    CosFormerFeatureMap,
    EluFeatureMap,
    FeatureMap,
    FocusedFeatureMap,
    HedgehogFeatureMap,
    NaLaFeatureMap,
    PolarityFeatureMap,
    ReluFeatureMap,
)
from nalaformer.layers.linear import LinearAttention
from nalaformer.layers.softmax import SoftmaxAttention
from nalaformer.ops.feature_maps import (
    NALA_ALPHA,
    NALA_CONSTANT_POWER,
    NALA_EPS,
    NALA_INHIBIT,
    NALA_LAM,
    NALA_TAU,
    NALA_TEMPERATURE,
)


@dataclass(frozen=True)
class AttentionSpec:
    """A registered mixer: its builder and the one-line description the README and ``nalaformer info`` show."""

    name: str
    builder: Callable[..., TokenMixer]
    paper: str
    summary: str
    causal: bool = True
    noncausal: bool = True
    image: bool = True


_REGISTRY: dict[str, AttentionSpec] = {}


def register_attention(
    name: str,
    builder: Callable[..., TokenMixer],
    *,
    paper: str,
    summary: str,
    causal: bool = True,
    noncausal: bool = True,
    image: bool = True,
) -> None:
    """Add a mixer to the registry. ``builder(dim, num_heads, *, causal, layout, **options)`` returns it."""
    if name in _REGISTRY:
        raise ValueError(f"attention {name!r} is already registered")
    _REGISTRY[name] = AttentionSpec(name, builder, paper, summary, causal, noncausal, image)


def list_attentions() -> list[str]:
    """Names accepted by :func:`build_attention`, in registration order."""
    return list(_REGISTRY)


def mixer_names(entry: str | Sequence[str], count: int, argument: str, unit: str = "block") -> list[str]:
    """One registered mixer name per position: the way every model reads its mixer arguments.

    Args:
        entry: one registry name for every position, or a sequence of ``count`` names.
        count: how many positions (blocks of a stage, layers of a model).
        argument: the argument's name, for the error messages (e.g. ``"mixers[2]"``, ``"layer_mixers"``).
        unit: what one position is, for the error messages. Default: "block".

    Raises:
        ValueError: a sequence of the wrong length, an entry that is not a string, or a name that is not registered.
    """
    names = [entry] * count if isinstance(entry, str) else list(entry) if isinstance(entry, (list, tuple)) else None
    if names is None or len(names) != count or not all(isinstance(name, str) for name in names):
        raise ValueError(
            f"{argument} must be a list of {count} mixer names (one per {unit}) or one name for all, got {entry!r}"
        )
    for index, name in enumerate(names):
        if name not in _REGISTRY:
            where = argument if isinstance(entry, str) else f"{argument}[{index}]"
            raise ValueError(f"{where}={name!r} is not a registered mixer; known: {', '.join(_REGISTRY)}")
    return names


def attention_spec(name: str) -> AttentionSpec:
    """The registered spec of ``name`` (ValueError listing the known names otherwise)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown attention {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def build_attention(
    name: str, dim: int, num_heads: int, *, causal: bool = False, layout: str = "1d", **options: Any
) -> TokenMixer:
    """Build the token mixer ``name``.

    Args:
        name (str): a name from :func:`list_attentions` (e.g. ``"nala"``, ``"softmax"``, ``"elu"``).
        dim (int): channels ``C``.
        num_heads (int): heads (must divide ``dim``).
        causal (bool): causal 1-D mixer with a decoding state. Default: False.
        layout (str): ``"1d"`` for sequences ``[B, T, C]``, ``"2d"`` for images. Default: "1d".
        **options: block options (``rope``, ``lepe``, ``gate``, ``lepe_kernel_size``, ``rope_base``, ``qkv_bias``,
            ``eps``, ``chunk_size``) and the method's own options (e.g. NaLa's ``lam``, ``tau``, ``temperature``
            (a float, ``"learned"``, ``"running"`` or ``"sqrt_d"``), ``inhibit``, ``alpha``). Unknown options raise
            a ValueError naming them.
    """
    spec = attention_spec(name)
    check_form(
        f"attention {name!r}", causal, layout, causal_ok=spec.causal, noncausal_ok=spec.noncausal, image_ok=spec.image
    )
    return spec.builder(dim, num_heads, causal=causal, layout=layout, **options)


_LINEAR_OPTIONS = {"eps", "chunk_size"}
_BLOCK_OPTIONS = {"rope", "lepe", "gate", "lepe_kernel_size", "rope_base", "qkv_bias"}


def _split_options(name: str, options: dict[str, Any], own: set[str], shared: set[str]) -> tuple[dict, dict]:
    unknown = set(options) - own - shared
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for attention {name!r}; accepted: {sorted(own | shared)}"
        )
    return {k: v for k, v in options.items() if k in own}, {k: v for k, v in options.items() if k in shared}


def linear_builder(
    name: str, make_feature_map: Callable[..., FeatureMap], fixed: dict[str, Any] | None = None
) -> Callable[..., TokenMixer]:
    """A builder of :class:`LinearAttention` whose feature map is ``make_feature_map(**own_options)``.

    The feature map's own options are the keyword parameters of ``make_feature_map`` other than ``num_heads``,
    ``head_dim`` and ``causal``, which the builder passes itself; ``fixed`` pins options (e.g. an ablation's power).
    """
    parameters = set(inspect.signature(make_feature_map).parameters)
    supplied = {"num_heads", "head_dim", "causal"} & parameters
    own_names = parameters - supplied - set(fixed or {})

    def build(dim: int, num_heads: int, *, causal: bool, layout: str, **options: Any) -> TokenMixer:
        own, shared = _split_options(name, options, own_names, _BLOCK_OPTIONS | _LINEAR_OPTIONS)
        context = {"num_heads": num_heads, "head_dim": dim // num_heads if num_heads else 0, "causal": causal}
        feature_map = make_feature_map(**{k: context[k] for k in supplied}, **(fixed or {}), **own)
        return LinearAttention(dim, num_heads, feature_map=feature_map, causal=causal, layout=layout, **shared)

    return build


def _softmax_builder(dim: int, num_heads: int, *, causal: bool, layout: str, **options: Any) -> TokenMixer:
    _, shared = _split_options("softmax", options, set(), _BLOCK_OPTIONS)
    return SoftmaxAttention(dim, num_heads, causal=causal, layout=layout, **shared)


def _nala_map(
    num_heads: int,
    head_dim: int,
    lam: float = NALA_LAM,
    tau: float = NALA_TAU,
    temperature: float | str = NALA_TEMPERATURE,
    inhibit: str = NALA_INHIBIT,
    alpha: float = NALA_ALPHA,
    eps: float = NALA_EPS,
    momentum: float = 0.05,
) -> NaLaFeatureMap:
    return NaLaFeatureMap(
        lam, tau, temperature, inhibit, alpha, None, eps, num_heads=num_heads, head_dim=head_dim, momentum=momentum
    )


def _constant_power_map(inhibit: str):
    def make(
        lam: float = NALA_LAM, power: float = NALA_CONSTANT_POWER, alpha: float = NALA_ALPHA, eps: float = NALA_EPS
    ) -> NaLaFeatureMap:
        return NaLaFeatureMap(lam=lam, inhibit=inhibit, alpha=alpha, power=power, eps=eps)

    return make


_NALA_PAPER = "Meng et al., NaLaFormer, arXiv 2506.21137"
register_attention(
    "nala",
    linear_builder("nala", _nala_map),
    paper=_NALA_PAPER,
    summary="|q/||q|||^p(||q||) with p = lam(tau + tanh||q||), keys |k|^lam; sign split [relu(x), relu(-x)]",
)
register_attention(
    "nala_cosine",
    linear_builder("nala_cosine", _nala_map, fixed={"inhibit": "cosine"}),
    paper=_NALA_PAPER + " (Eq. 16-17)",
    summary="NaLa with cosine inhibit: magnitudes times [cos, sin] of (pi/4) tanh(alpha x_hat)",
)
register_attention(
    "nala_learned_t",
    linear_builder("nala_learned_t", _nala_map, fixed={"temperature": "learned"}),
    paper=_NALA_PAPER + " (with a trained norm temperature)",
    summary="NaLa with p = lam(tau + tanh(||q|| / T_h)), T_h per head, learned, initialised at the median ||q||",
)
register_attention(
    "nala_running_t",
    linear_builder("nala_running_t", _nala_map, fixed={"temperature": "running"}),
    paper=_NALA_PAPER + " (with a running norm temperature)",
    summary="NaLa with p = lam(tau + tanh(||q|| / T_h)), T_h = running median ||q|| of head h (moved by training)",
)
register_attention(
    "softmax",
    _softmax_builder,
    paper="Vaswani et al., 2017 (torch scaled_dot_product_attention)",
    summary="exp(q·k / sqrt(d)); quadratic; KV cache grows with the context",
)
register_attention(
    "elu",
    linear_builder("elu", EluFeatureMap),
    paper="Katharopoulos et al., Transformers are RNNs, 2020",
    summary="elu(x) + 1 for queries and keys",
)
register_attention(
    "relu",
    linear_builder("relu", ReluFeatureMap),
    paper="Cai et al., EfficientViT, 2023",
    summary="relu(x) for queries and keys",
)
register_attention(
    "flatten",
    linear_builder("flatten", FocusedFeatureMap),
    paper="Han et al., FLatten Transformer, 2023",
    summary="focused map ||y|| y^3 / ||y^3||, y = relu(x) / softplus(learnable scale)",
)
register_attention(
    "polaformer",
    linear_builder("polaformer", PolarityFeatureMap),
    paper="Meng et al., PolaFormer, 2025",
    summary="same-sign [q+^p, q-^p] and opposite-sign [q-^p, q+^p] streams on value halves, learnable p",
)
register_attention(
    "cosformer",
    linear_builder("cosformer", CosFormerFeatureMap),
    paper="Qin et al., cosFormer, 2022",
    summary="relu(x) re-weighted by cos(pi (i - j) / 2M) via [sin, cos] of positions",
)
register_attention(
    "hedgehog",
    linear_builder("hedgehog", HedgehogFeatureMap),
    paper="Zhang et al., The Hedgehog & the Porcupine, 2024",
    summary="[softmax(Wx), softmax(-Wx)] over features, learnable W (identity at init)",
)
register_attention(
    "relu_power",
    linear_builder("relu_power", _constant_power_map("none")),
    paper=_NALA_PAPER + " (Table 5, row 1)",
    summary="ablation: relu(x_hat)^p with a constant p (negatives dropped)",
)
register_attention(
    "sign_split_power",
    linear_builder("sign_split_power", _constant_power_map("sign")),
    paper=_NALA_PAPER + " (Table 5, row 2, sign split)",
    summary="ablation: [relu(x_hat)^p, relu(-x_hat)^p] with a constant p (NaLa without norm awareness)",
)
register_attention(
    "cosine_inhibit_power",
    linear_builder("cosine_inhibit_power", _constant_power_map("cosine")),
    paper=_NALA_PAPER + " (Table 5, row 2, cosine inhibit)",
    summary="ablation: cosine inhibit with a constant p (NaLa-cosine without norm awareness)",
)
