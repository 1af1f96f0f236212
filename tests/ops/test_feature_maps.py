"""NaLa's feature maps: the released code's formulas, the cosine-inhibit limit, and numerical safety."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from nalaformer.ops import nala_exponent, nala_key_map, nala_query_map, safe_pow
from tests.assertions import assert_close


def released_code_features(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The released NaLaFormer code's feature computation, transcribed as plain math (docs/method.md §3.2-3.3)."""
    k = k**3
    q_norm = q.norm(dim=-1, keepdim=True)
    power = 3 * (0.5 + torch.tanh(q_norm))
    phi_q = torch.cat([(torch.relu(q) / q_norm) ** power, (torch.relu(-q) / q_norm) ** power], dim=-1)
    phi_k = torch.cat([torch.relu(k), torch.relu(-k)], dim=-1)
    return phi_q, phi_k


def test_defaults_match_released_code():
    q, k = torch.randn(2, 50, 3, 32), torch.randn(2, 50, 3, 32)
    ref_q, ref_k = released_code_features(q, k)
    assert_close("phi_q", ref_q, nala_query_map(q), ratio=1e-6)
    assert_close("phi_k", ref_k, nala_key_map(k), ratio=1e-6)


def test_kernel_keeps_same_sign_products_only():
    """phi_q · phi_k = Σ_{sign q_i = sign k_i} |q_hat_i|^p |k_i|^3 (docs/method.md §3.5)."""
    q, k = torch.randn(100, 16, dtype=torch.float64), torch.randn(100, 16, dtype=torch.float64)
    n = q.norm(dim=-1, keepdim=True)
    p = 3 * (0.5 + torch.tanh(n))
    same = (torch.sign(q) == torch.sign(k)).double()
    expected = (same * (q.abs() / n) ** p * k.abs() ** 3).sum(-1)
    kernel = (nala_query_map(q) * nala_key_map(k)).sum(-1)
    assert_close("kernel", expected, kernel, ratio=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_exponent_grows_with_norm_and_saturates(temperature):
    norms = torch.tensor([0.0, 0.25, 1.0, 2.0, 4.0, 100.0]).unsqueeze(-1)
    p = nala_exponent(norms, temperature=temperature).squeeze(-1)
    assert torch.all(p[1:] >= p[:-1])
    assert float(p[0]) == pytest.approx(1.5)
    assert float(p[-1]) == pytest.approx(4.5, abs=1e-6)
    # a temperature delays saturation: at ||q|| = 2 the exponent is further from 4.5
    assert float(p[3]) == pytest.approx(3 * (0.5 + math.tanh(2.0 / temperature)), rel=1e-6)


def test_cosine_inhibit_approaches_sign_split():
    generator = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 196, 1, 64, dtype=torch.float64, generator=generator) for _ in range(2))
    sign_kernel = nala_query_map(q)[0, :, 0] @ nala_key_map(k)[0, :, 0].T
    errors = []
    for alpha in [1.0, 5.0, 20.0, 100.0, 1e4]:
        cosine = (
            nala_query_map(q, inhibit="cosine", alpha=alpha)[0, :, 0]
            @ nala_key_map(k, inhibit="cosine", alpha=alpha)[0, :, 0].T
        )
        assert torch.all(cosine >= -1e-12), "the cosine-inhibit kernel must stay non-negative"
        errors.append(float((cosine - sign_kernel).abs().max() / sign_kernel.abs().max()))
    assert all(b < a for a, b in itertools.pairwise(errors)), errors
    # alpha = 1 (the paper's own angle map) barely inhibits; alpha = 1e4 is the sign split to rounding
    assert errors[0] > 0.2 and errors[-1] < 1e-3, errors


def test_cosine_features_have_same_norm_as_magnitudes():
    q = torch.randn(10, 16, dtype=torch.float64)
    phi = nala_query_map(q, inhibit="cosine")
    magnitude = nala_query_map(q, inhibit="sign")
    # cos^2 + sin^2 = 1 per dimension, and the sign split puts each magnitude in exactly one half
    assert_close("norm", magnitude.norm(dim=-1), phi.norm(dim=-1), ratio=1e-12)


@pytest.mark.parametrize("inhibit", ["sign", "cosine", "none"])
def test_zero_query_and_key_are_finite_with_finite_gradients(inhibit):
    q = torch.zeros(2, 3, 1, 8, requires_grad=True)
    k = torch.zeros(2, 3, 1, 8, requires_grad=True)
    phi_q, phi_k = nala_query_map(q, inhibit=inhibit), nala_key_map(k, inhibit=inhibit)
    assert torch.equal(phi_q, torch.zeros_like(phi_q)) and torch.equal(phi_k, torch.zeros_like(phi_k))
    (phi_q.sum() + phi_k.sum()).backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(k.grad).all()


def test_exact_zero_components_have_finite_gradients():
    """relu(q_hat)^p at a zero component: value 0, gradient finite (also for exponents below 1)."""
    q = torch.tensor([[0.0, 1.0, -2.0, 0.0]], requires_grad=True)
    for tau in [0.5, -0.4]:
        q.grad = None
        nala_query_map(q, tau=tau).sum().backward()
        assert torch.isfinite(q.grad).all()


def test_safe_pow_matches_pow_on_positive_inputs():
    x = torch.rand(100, dtype=torch.float64) + 0.01
    p = torch.rand(100, dtype=torch.float64) * 4
    assert_close("pow", x**p, safe_pow(x, p), ratio=1e-14)
    assert torch.equal(safe_pow(torch.zeros(3), 2.5), torch.zeros(3))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_give_fp32_features(dtype):
    # 40^3 = 64000 is close to fp16's limit and 100^3 overflows it: features are computed in fp32
    k = torch.tensor([[100.0, -40.0, 3.0, 0.5]], dtype=dtype)
    phi = nala_key_map(k)
    assert phi.dtype == torch.float32 and torch.isfinite(phi).all()
    assert float(phi[0, 0]) == pytest.approx(1e6, rel=1e-2)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="inhibit"):
        nala_query_map(torch.randn(2, 4), inhibit="relu")
    with pytest.raises(ValueError, match="temperature"):
        nala_query_map(torch.randn(2, 4), temperature=0.0)
    with pytest.raises(TypeError, match="floating-point"):
        nala_key_map(torch.ones(2, 4, dtype=torch.long))
