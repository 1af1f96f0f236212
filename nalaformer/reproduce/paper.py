"""The paper's published numbers that the study's measurements are set against (v1 of arXiv 2506.21137).

These are reference data quoted from the paper's tables, never results of this library; the report prints them in
their own column next to what the study measured.
"""

from __future__ import annotations

PAPER = "Meng et al., NaLaFormer (arXiv 2506.21137 v1)"

# Table 5: ablation in the FLatten Swin-T setting, ImageNet-1K top-1 (%).
TABLE5_ABLATION = {
    "relu_power": {"row": "ReLU + constant power (non-negativity, spiky)", "imagenet_top1": 82.1},
    "sign_split_power": {"row": "+ norm consistency (cosine inhibit)", "imagenet_top1": 82.5},
    "nala": {"row": "+ norm-aware power (NaLa)", "imagenet_top1": 82.9},
}

# Table 6: linear attentions in the Swin-T setting, ImageNet-1K top-1 (%), for the methods this library implements.
TABLE6_SWIN_T = {
    "softmax": 81.2,
    "relu": 81.8,  # "EnhancedAttn" (EfficientViT's ReLU linear attention)
    "flatten": 82.1,
    "polaformer": 82.6,
    "nala": 82.9,
}

# Table 4: 340M language models trained on 15B SlimPajama tokens; WikiText perplexity and the mean zero-shot accuracy
# of PIQA, HellaSwag, WinoGrande, ARC-e, ARC-c (%).
TABLE4_LM = {
    "softmax": {"label": "Transformer++", "wiki_ppl": 28.39, "avg_acc": 43.3},
    "deltanet": {"label": "DeltaNet", "wiki_ppl": 29.08, "avg_acc": 43.6},
    "nala_deltanet": {"label": "NaLa+DN", "wiki_ppl": 27.82, "avg_acc": 44.3},
    "gated_deltanet": {"label": "Gated DeltaNet", "wiki_ppl": 26.59, "avg_acc": 44.3},
    "nala_gated_deltanet": {"label": "NaLa+GDN", "wiki_ppl": 25.89, "avg_acc": 44.8},
}

# Figure 5 (read off the plot): softmax training throughput falls from about 16.5k tokens/s at 1K to about 6k at 6K
# tokens and runs out of memory at 8K on one A6000, while the linear models stay roughly flat (about 15-21k).
FIGURE5 = {"softmax_oom_at_tokens": 8192, "softmax_speedup_claim_at_6k": 2.5}

# Table 1: NaLaFormer-T on ImageNet-1K (224²): 15M parameters, 2.7 GFLOPs, 82.6% top-1.
TABLE1_NALAFORMER_T = {"params_m": 15, "gflops": 2.7, "imagenet_top1": 82.6}
