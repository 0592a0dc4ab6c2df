"""Video data pipeline: decoding, frame sampling, annotations, augmentation, datasets and multi-view evaluation.

Typical training input path::

    ann = load_annotations("kinetics_csv", "train.csv", root="k400/train")
    ds = VideoClipDataset(ann, DenseSampler(8, 16), VideoTrainTransform(AugmentConfig.kinetics()))
    # in the loop, on the accelerator:
    clips = VideoNormalize(mean, std)(batch.to(device))          # (B, C, T, H, W) float
    clips, targets = BatchMixer(num_classes, label_smoothing=0.1)(clips, labels.to(device))
"""

from .annotations import (
    ANNOTATION_FORMATS,
    VIDEO_EXTENSIONS,
    kinetics_classes,
    list_annotation_formats,
    load_annotations,
    parse_diving48_json,
    parse_folder_tree,
    parse_kinetics_csv,
    parse_ssv2_json,
    parse_video_list,
    register_annotation_format,
)
from .batch import BatchMixer, VideoNormalize, prepare_batch, soft_targets
from .dataset import SKIPPED_LABEL, MultiViewDataset, VideoClipDataset
from .decode import (
    DECODE_BACKENDS,
    VideoDecodeError,
    count_frames,
    decode_frames,
    default_backend,
    resized_shape,
    torchcodec_available,
)
from .probe import TRUNCATION_TOLERANCE, VideoIndex, probe_video
from .encode import encode_video, encoder_available
from .metrics import EvaluationResult, mean_class_accuracy, top_k_accuracy
from .records import AnnotationError, Annotations, VideoRecord
from .sampling import DenseSampler, FrameSampler, SegmentSampler
from .skips import SkipTracker
from .synthetic import (
    SyntheticMotionDataset,
    motion_class_names,
    motion_clip,
    write_corrupt_video,
    write_synthetic_videos,
)
from .transforms import AugmentConfig, VideoTestTransform, VideoTrainTransform, three_crop
from .views import evaluate_multi_view, multi_view_scores

__all__ = [
    "ANNOTATION_FORMATS",
    "DECODE_BACKENDS",
    "SKIPPED_LABEL",
    "TRUNCATION_TOLERANCE",
    "VIDEO_EXTENSIONS",
    "AnnotationError",
    "Annotations",
    "AugmentConfig",
    "BatchMixer",
    "DenseSampler",
    "EvaluationResult",
    "FrameSampler",
    "MultiViewDataset",
    "SegmentSampler",
    "SkipTracker",
    "SyntheticMotionDataset",
    "VideoClipDataset",
    "VideoDecodeError",
    "VideoIndex",
    "VideoNormalize",
    "VideoRecord",
    "VideoTestTransform",
    "VideoTrainTransform",
    "count_frames",
    "decode_frames",
    "default_backend",
    "encode_video",
    "encoder_available",
    "evaluate_multi_view",
    "kinetics_classes",
    "list_annotation_formats",
    "load_annotations",
    "mean_class_accuracy",
    "motion_class_names",
    "motion_clip",
    "multi_view_scores",
    "parse_diving48_json",
    "parse_folder_tree",
    "parse_kinetics_csv",
    "parse_ssv2_json",
    "parse_video_list",
    "prepare_batch",
    "probe_video",
    "register_annotation_format",
    "resized_shape",
    "soft_targets",
    "three_crop",
    "top_k_accuracy",
    "torchcodec_available",
    "write_corrupt_video",
    "write_synthetic_videos",
]
