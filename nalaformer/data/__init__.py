"""Real datasets that ship offline, tokenizers, and synthetic tasks. Independent of ops / layers / models."""

from nalaformer.data.image_sources import (
    ImageSource,
    ImageSplit,
    load_cifar10,
    load_digits,
    load_idx_directory,
    load_image_folder,
    load_mnist_5k,
    read_idx,
)
from nalaformer.data.images import (
    IMAGE_DATASETS,
    ImageDataset,
    ImageDatasets,
    ImageTransform,
    build_image_datasets,
    load_image_source,
    split_indices,
)
from nalaformer.data.listops import ListOpsDataset, listops_example
from nalaformer.data.mqar import IGNORE_INDEX, MQARDataset, mqar_accuracy, mqar_example
from nalaformer.data.pathfinder import PathfinderDataset, pathfinder_example
from nalaformer.data.pixel_sequences import PixelSequenceDataset, load_pixel_source, pixel_sequence_splits
from nalaformer.data.text import (
    TokenWindows,
    load_corpus,
    load_shakespeare,
    read_text,
    shakespeare_play_paths,
    split_stream,
    strip_play_markup,
)
from nalaformer.data.tokenizers import (
    TOKENIZER_KINDS,
    ByteTokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    build_tokenizer,
    encode_to_tensor,
    load_tokenizer,
)

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_DATASETS",
    "TOKENIZER_KINDS",
    "ByteTokenizer",
    "CharTokenizer",
    "GPT2Tokenizer",
    "ImageDataset",
    "ImageDatasets",
    "ImageSource",
    "ImageSplit",
    "ImageTransform",
    "ListOpsDataset",
    "MQARDataset",
    "PathfinderDataset",
    "PixelSequenceDataset",
    "TokenWindows",
    "build_image_datasets",
    "build_tokenizer",
    "encode_to_tensor",
    "listops_example",
    "load_cifar10",
    "load_corpus",
    "load_digits",
    "load_idx_directory",
    "load_image_folder",
    "load_image_source",
    "load_mnist_5k",
    "load_pixel_source",
    "load_shakespeare",
    "load_tokenizer",
    "mqar_accuracy",
    "mqar_example",
    "pathfinder_example",
    "pixel_sequence_splits",
    "read_idx",
    "read_text",
    "shakespeare_play_paths",
    "split_indices",
    "split_stream",
    "strip_play_markup",
]
