"""How many state directions the delta-rule mixers' key and query features use at initialisation.

    PYTHONPATH=. python benchmarks/norm_temperature/delta_features.py

For each map, builds the mixer at the MQAR study width (C = 64, 2 heads, D = 32), runs a random batch (8 x 32 tokens)
through it and prints, mean over 3 initialisations: the participation ratio 1 / sum_i w_i^2 with
w_i = phi_i^2 / ||phi||^2 (the number of feature dimensions a query / key effectively spreads over; F for a flat
vector, 1 for a one-hot one) of the query and key features the delta rule receives, and the gradient norm of a
random regression loss on the query / key rows of the input projection relative to the value rows. Seconds on a CPU.
"""

import torch

import nalaformer.layers.delta as delta_module
from nalaformer.layers import build_attention

MAPS = [
    ("gated_deltanet", {}),
    ("nala_gated_deltanet", {"lam": 3.0}),
    ("nala_gated_deltanet", {"lam": 3.0, "temperature": "running"}),
    ("nala_gated_deltanet", {"lam": 2.0}),
    ("nala_gated_deltanet", {"lam": 1.0}),
    ("nala_gated_deltanet", {"lam": 3.0, "inhibit": "none"}),
    ("deltanet", {}),
    ("nala_deltanet", {"lam": 3.0}),
    ("nala_deltanet", {"lam": 1.0}),
]


def participation(features: torch.Tensor) -> float:
    weights = features.pow(2) / features.pow(2).sum(-1, keepdim=True).clamp_min(1e-30)
    return float((1.0 / weights.pow(2).sum(-1)).mean())


def main() -> None:
    torch.set_num_threads(1)
    seen = {}
    original = delta_module.delta_rule

    def spy(q, k, v, beta, **kwargs):
        seen["q"], seen["k"] = q.detach(), k.detach()
        return original(q, k, v, beta, **kwargs)

    delta_module.delta_rule = spy
    x = torch.randn(8, 32, 64, generator=torch.Generator().manual_seed(1))
    print("| mixer | options | F | PR(phi_q) | PR(phi_k) | grad W_q / W_v | grad W_k / W_v |")
    print("|---|---|---|---|---|---|---|")
    for name, options in MAPS:
        rows = []
        for seed in range(3):
            torch.manual_seed(seed)
            mixer = build_attention(name, 64, 2, causal=True, **options)
            y = mixer(x)
            (y - torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))).square().mean().backward()
            grad = mixer.in_proj.weight.grad
            g_q, g_k, g_v = (grad[i * 64 : (i + 1) * 64].norm() for i in range(3))
            rows.append([participation(seen["q"]), participation(seen["k"]), float(g_q / g_v), float(g_k / g_v)])
        mean = torch.tensor(rows).mean(0).tolist()
        width = seen["q"].shape[-1]
        print(f"| {name} | {options or '-'} | {width} | " + " | ".join(f"{v:.2f}" for v in mean) + " |")


if __name__ == "__main__":
    main()
