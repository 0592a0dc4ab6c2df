"""Video data pipeline: decoding, frame sampling, annotations, augmentation, datasets and multi-view evaluation.

The training input path, on a tiny generated dataset (workers return uint8 clips; normalisation and mixing run
batched on the accelerator):

>>> import tempfile, torch
>>> from adaptkit.data import (AugmentConfig, BatchMixer, DenseSampler, VideoClipDataset, VideoNormalize,
...                            VideoTrainTransform, load_annotations, write_synthetic_videos)
>>> list_file = write_synthetic_videos(tempfile.mkdtemp(), 4, num_frames=40, size=48, num_classes=2)
>>> ann = load_annotations("video_list", list_file, root=list_file.parent)
>>> ds = VideoClipDataset(ann, DenseSampler(8, 4), VideoTrainTransform(AugmentConfig(crop_size=32, resize_size=40)))
>>> clip, label, index = ds[0]
>>> clip.shape, clip.dtype                                    # (T, C, H, W)
(torch.Size([8, 3, 32, 32]), torch.uint8)
>>> batch = torch.stack([ds[i][0] for i in range(4)])         # what a DataLoader yields: (B, T, C, H, W)
>>> labels = torch.tensor([ds[i][1] for i in range(4)])
>>> clips = VideoNormalize([0.5] * 3, [0.5] * 3)(batch)       # (B, C, T, H, W) float
>>> clips, targets = BatchMixer(2, label_smoothing=0.1)(clips, labels)
>>> clips.shape, targets.shape
(torch.Size([4, 3, 8, 32, 32]), torch.Size([4, 2]))
"""

from .actions import (
    ACTION_CLASSES,
    ACTION_PAIRS,
    ActionDataset,
    ActionVideoSettings,
    action_video,
    generate_action_dataset,
    mirror_lengths,
    reversed_partner,
    write_action_videos,
)
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
    GPUDecodingUnavailable,
    check_gpu_decoding,
    VideoDecodeError,
    count_frames,
    decode_frames,
    default_backend,
    resized_shape,
    torchcodec_available,
)
from .probe import DECODE_ERROR_KINDS, TRUNCATION_TOLERANCE, VideoIndex, open_video_stream, probe_video
from .encode import encode_video, encoder_available
from .frame_cache import FrameCache, build_frame_cache
from .metrics import EvaluationResult, mean_class_accuracy, top_k_accuracy
from .records import AnnotationError, Annotations, VideoRecord
from .sampling import DENSE_TEST_CONVENTIONS, DenseSampler, FrameSampler, SegmentSampler
from .shapes import COLOURS, SHAPES, shape_images
from .skips import SkipTracker
from .synthetic import (
    SyntheticMotionDataset,
    motion_class_names,
    motion_clip,
    write_corrupt_video,
    write_synthetic_videos,
)
from .transforms import AugmentConfig, VideoTestTransform, VideoTrainTransform, three_crop
from .video_files import VideoFileCheck, check_video_files
from .views import evaluate_multi_view, multi_view_scores

__all__ = [
    "ACTION_CLASSES",
    "ACTION_PAIRS",
    "COLOURS",
    "SHAPES",
    "ActionDataset",
    "ActionVideoSettings",
    "action_video",
    "generate_action_dataset",
    "mirror_lengths",
    "reversed_partner",
    "shape_images",
    "write_action_videos",
    "ANNOTATION_FORMATS",
    "DECODE_BACKENDS",
    "DECODE_ERROR_KINDS",
    "DENSE_TEST_CONVENTIONS",
    "SKIPPED_LABEL",
    "TRUNCATION_TOLERANCE",
    "VIDEO_EXTENSIONS",
    "AnnotationError",
    "Annotations",
    "AugmentConfig",
    "BatchMixer",
    "DenseSampler",
    "EvaluationResult",
    "FrameCache",
    "GPUDecodingUnavailable",
    "FrameSampler",
    "MultiViewDataset",
    "SegmentSampler",
    "SkipTracker",
    "SyntheticMotionDataset",
    "VideoClipDataset",
    "VideoDecodeError",
    "VideoFileCheck",
    "VideoIndex",
    "VideoNormalize",
    "VideoRecord",
    "VideoTestTransform",
    "VideoTrainTransform",
    "build_frame_cache",
    "check_gpu_decoding",
    "check_video_files",
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
    "open_video_stream",
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
