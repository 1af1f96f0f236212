"""Token mixers: NaLa attention for sequences and images, softmax attention and the linear baselines."""

from nalaformer.layers.base import MixerState, TokenMixer

__all__ = ["MixerState", "TokenMixer"]
