"""adaptkit: turn pretrained image transformers into video models without full finetuning.

>>> import adaptkit, timm, torch
>>> video_model = adaptkit.inject(timm.create_model("test_vit"), strategy="aim", num_frames=8, num_classes=10)
>>> video_model(torch.randn(2, 3, 8, 160, 160)).shape
torch.Size([2, 10])
"""

__version__ = "0.1.0"

from adaptkit.backbones import BackboneFamily, list_backbones, register_backbone
from adaptkit.checkpoint import ArchitectureMismatchError, BackboneWeightsWarning, CorruptCheckpointError
from adaptkit.counting import count_flops, count_parameters
from adaptkit.errors import (
    AdaptkitError,
    CheckpointMismatchError,
    MergeError,
    NoReadableVideoError,
    StrategyOptionError,
    UnloadedModelError,
    UnsupportedBackboneError,
    VideoInputError,
)
from adaptkit.inject import from_pretrained, inject
from adaptkit.model import VideoModel
from adaptkit.self_checks import MERGE_TOLERANCE
from adaptkit.strategies import StrategyConfig, list_strategies, register_strategy

__all__ = [
    "AdaptkitError",
    "ArchitectureMismatchError",
    "BackboneWeightsWarning",
    "CheckpointMismatchError",
    "CorruptCheckpointError",
    "MERGE_TOLERANCE",
    "BackboneFamily",
    "MergeError",
    "NoReadableVideoError",
    "StrategyConfig",
    "StrategyOptionError",
    "UnloadedModelError",
    "UnsupportedBackboneError",
    "VideoInputError",
    "VideoModel",
    "__version__",
    "count_flops",
    "count_parameters",
    "from_pretrained",
    "inject",
    "list_backbones",
    "list_strategies",
    "register_backbone",
    "register_strategy",
]
