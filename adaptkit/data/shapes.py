"""Vectorised rendering of flat coloured shapes: the drawing primitives of the generated action videos and of the
still images an embedded backbone is pretrained on.

Shapes are defined in their own frame (``u, v`` in [-1, 1]) and placed with a centre, a radius and an angle; pixels
are evaluated on a 2x supersampled grid and averaged, so sub-pixel motion, growth and rotation change the image.
"""

from __future__ import annotations

import numpy as np

__all__ = ["COLOURS", "SHAPES", "composite", "render_masks", "shape_images", "textured_background"]

# Order fixes the pretraining labels (shape index * len(COLOURS) + colour index).
SHAPES = ("square", "triangle", "cross", "l-shape", "t-shape", "arrow")
COLOURS = {  # name -> RGB
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 235),
    "yellow": (240, 220, 40),
    "magenta": (220, 50, 210),
    "cyan": (40, 215, 225),
}
_SUPERSAMPLE = 2


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of the shape in its own frame (u right, v down, unit radius)."""
    au, av = np.abs(u), np.abs(v)
    if shape == "square":
        return (au <= 0.75) & (av <= 0.75)
    if shape == "triangle":  # pointing up, equilateral-ish, centred
        return (v <= 0.6) & (v >= -0.9 + 1.75 * au)
    if shape == "cross":
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    if shape == "l-shape":
        return ((u >= -0.8) & (u <= -0.25) & (av <= 0.9)) | ((v >= 0.35) & (v <= 0.9) & (au <= 0.8))
    if shape == "t-shape":
        return ((v >= -0.9) & (v <= -0.35) & (au <= 0.9)) | ((au <= 0.28) & (v >= -0.9) & (v <= 0.9))
    if shape == "arrow":  # pointing right: a shaft and a head
        return ((av <= 0.22) & (u >= -0.95) & (u <= 0.2)) | ((u >= 0.0) & (u <= 0.95) & (av <= 0.9 * (0.95 - u)))
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def render_masks(
    shape: str, size: int, centres: np.ndarray, radii: np.ndarray, angles: np.ndarray
) -> np.ndarray:
    """Coverage of one shape in each of F frames: float32 (F, size, size) in [0, 1].

    Args:
        shape: one of :data:`SHAPES`.
        size: image side in pixels.
        centres: (F, 2) centre (row, column) in pixels.
        radii: (F,) radius in pixels (the shape spans about ``2 * radius``).
        angles: (F,) rotation in radians, clockwise on screen.
    """
    fine = size * _SUPERSAMPLE
    grid = (np.arange(fine, dtype=np.float32) + 0.5) / _SUPERSAMPLE  # pixel-centre coordinates
    rows = grid[None, :, None] - centres[:, 0, None, None].astype(np.float32)  # (F, fine, 1)
    cols = grid[None, None, :] - centres[:, 1, None, None].astype(np.float32)  # (F, 1, fine)
    cos = np.cos(angles).astype(np.float32)[:, None, None]
    sin = np.sin(angles).astype(np.float32)[:, None, None]
    scale = 1.0 / radii.astype(np.float32)[:, None, None]
    # Inverse rotation into the shape's frame (rows grow downwards, so +angle turns clockwise on screen).
    u = (cols * cos + rows * sin) * scale
    v = (rows * cos - cols * sin) * scale
    mask = _inside(shape, u, v).astype(np.float32)  # (F, fine, fine)
    return mask.reshape(-1, size, _SUPERSAMPLE, size, _SUPERSAMPLE).mean(axis=(2, 4))


def textured_background(
    rng: np.random.Generator, size: int, style: str = "waves", contrast: float | None = None
) -> np.ndarray:
    """A static random texture, float32 (size, size, 3) in [0, 255].

    ``"waves"``: three oriented sinusoids over a base colour (the videos); ``"blobs"``: smoothed noise (the
    pretraining images, a different distribution). ``contrast`` scales the texture (grey levels per unit of the
    pattern; defaults 6 for waves, 15 for blobs).

    Raises:
        ValueError: ``style`` is neither ``"waves"`` nor ``"blobs"``.
    """
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(20, 140, size=3).astype(np.float32)
    if style == "waves":
        texture = np.zeros((size, size), np.float32)
        for _ in range(3):
            angle, freq, phase = rng.uniform(0, np.pi), rng.uniform(1, 6), rng.uniform(0, 2 * np.pi)
            texture += np.sin(2 * np.pi * freq * (rows * np.cos(angle) + cols * np.sin(angle)) + phase)
        tint = rng.uniform(-1, 1, size=3).astype(np.float32)
        image = base + (6.0 if contrast is None else contrast) * texture[..., None] * (1 + 0.5 * tint)
    elif style == "blobs":
        noise = rng.normal(size=(size // 8 + 1, size // 8 + 1, 3)).astype(np.float32)
        coarse = np.kron(noise, np.ones((8, 8, 1), np.float32))[:size, :size]
        image = base + (15.0 if contrast is None else contrast) * coarse
    else:
        raise ValueError(f"unknown background style {style!r}")
    return np.clip(image, 0, 255)


def composite(background: np.ndarray, masks: np.ndarray, colour: np.ndarray, opacity: np.ndarray | None = None
              ) -> np.ndarray:
    """Paint a shape over frames: (F, H, W, 3) or (H, W, 3) background, (F, H, W) coverage -> (F, H, W, 3) float."""
    alpha = masks if opacity is None else masks * opacity[:, None, None]
    return background * (1 - alpha[..., None]) + colour.astype(np.float32) * alpha[..., None]


def shape_images(
    rng: np.random.Generator, count: int, size: int, position_grid: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Still images for image pretraining: one shape of one colour on a blob-textured background.

    Shape, colour jitter, size, rotation and position are random. The label names the shape, the colour and,
    with ``position_grid = g > 1``, which cell of a g x g grid holds the shape's centre:
    ``(shape index * len(COLOURS) + colour index) * g * g + row * g + column`` (36 g^2 classes). Naming the
    place keeps where things are in the features, as ImageNet / CLIP features keep it; a label blind to it
    teaches the model to discard position, which every left/right and up/down action needs.

    Returns:
        uint8 images (count, 3, size, size) and int64 labels (count,).

    Raises:
        ValueError: ``position_grid`` below 1.
    """
    if position_grid < 1:
        raise ValueError(f"position_grid must be >= 1, got {position_grid}")
    shapes = rng.integers(len(SHAPES), size=count)
    colours = rng.integers(len(COLOURS), size=count)
    radii = rng.uniform(0.25, 0.4, size=count) * size
    centres = rng.uniform(radii[:, None], size - radii[:, None], size=(count, 2))
    angles = rng.uniform(-0.3, 0.3, size=count)
    masks = np.empty((count, size, size), np.float32)
    for index, shape in enumerate(SHAPES):  # one vectorised call per shape
        chosen = np.flatnonzero(shapes == index)
        if chosen.size:
            masks[chosen] = render_masks(shape, size, centres[chosen], radii[chosen], angles[chosen])
    palette = np.array(list(COLOURS.values()), np.float32)
    rgb = palette[colours] + rng.normal(0, 12, size=(count, 3))
    backgrounds = np.stack([textured_background(rng, size, "blobs") for _ in range(count)])
    images = backgrounds * (1 - masks[..., None]) + rgb[:, None, None, :] * masks[..., None]  # (N, H, W, 3)
    images = np.clip(np.rint(images), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)
    cells = np.minimum((centres / size * position_grid).astype(np.int64), position_grid - 1)  # (N, 2) row, column
    places = cells[:, 0] * position_grid + cells[:, 1]
    return np.ascontiguousarray(images), (shapes * len(COLOURS) + colours) * position_grid**2 + places
