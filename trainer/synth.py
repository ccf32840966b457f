"""Synthetic DFDC-shaped data: REAL talking-head clips and FAKE face swaps of them, as H.264 mp4.

No real deepfake dataset can be fetched here, so demos, tests and benchmarks run on clips made
from the real face imagery that scikit-image ships: the astronaut portrait (one sharp face, used
for fine detail, hair and head shape) and the 100 LFW faces of ``lfw_subset`` (25x25 grey faces,
used for the coarse shading that makes identities look different). Each identity is that head
with a different skin tone, hair colour and style, face geometry, shading, clothing and
accessories, so no two clips need share a face.

A FAKE is rendered from the same scene as its REAL original (same background, motion, lighting
and camera noise), with the inner face replaced the way face-swap tools do it: the donor's face
is aligned to the target's landmarks, rendered at a lower resolution, colour-transferred
towards the target, pasted through a feathered elliptical mask and re-aligned every frame with
a little jitter. ``difficulty`` in [0, 1] scales every artefact from obvious (0) to subtle (1).

Layout written by :func:`generate_dataset` (as in the DFDC training archives)::

    out_dir/dfdc_train_part_0/metadata.json   {"abc.mp4": {"label": "REAL", "split": "train", "original": null},
                                               "xyz.mp4": {"label": "FAKE", "split": "train", "original": "abc.mp4"}}
    out_dir/dfdc_train_part_0/abc.mp4         H.264, yuv420p

Only numpy, OpenCV, PyAV and scikit-image are used, so importing this module is cheap.
"""

from __future__ import annotations

import functools
import json
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import cv2
import numpy as np
import skimage.data

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "ClipWriter",
    "Identity",
    "generate_dataset",
    "make_identity",
    "render_sample_clip",
    "write_clip",
]

# The canonical portrait canvas is a window on the astronaut image: canvas (0, 0) is image
# (64, -32), so there is room above the hair and beside the shoulders.
_CANVAS_W, _CANVAS_H = 320, 400
_CANVAS_ORIGIN = np.array([64.0, -32.0], dtype=np.float32)
# Landmarks on the astronaut image (x, y): left eye, right eye, nose tip, mouth centre, chin.
_ASTRONAUT_LANDMARKS = np.array(
    [[202.0, 101.0], [246.5, 103.5], [222.5, 131.0], [222.5, 145.0], [224.0, 178.0]], dtype=np.float32
)
# Height of OpenCV's Haar face box on the astronaut, in canvas px: the unit that "face size" means.
_FACE_BOX_PX = 95.0
# The same landmarks (eyes, nose, mouth) on the aligned 25x25 LFW crops, found on their mean face.
_LFW_LANDMARKS = np.array([[7.0, 8.5], [15.0, 8.5], [11.0, 13.5], [11.0, 17.5]], dtype=np.float32)

CRF = 23  # x264's default quality: visible blocking on noise and fine texture, as in DFDC
_PRESET = "veryfast"


# --------------------------------------------------------------------------------------------
# Face sources


@dataclass(frozen=True)
class _HeadSource:
    """The astronaut's head on the canonical canvas, split into regions that identities recolour.

    All arrays are float32 [_CANVAS_H, _CANVAS_W] (``rgb``/``lab`` with a trailing 3) with weights
    in [0, 1]; ``lab`` is OpenCV float Lab (L in [0, 100]).
    """

    rgb: np.ndarray
    lab: np.ndarray
    matte: np.ndarray  # head and hair against the studio backdrop, cut along the jaw
    skin: np.ndarray  # face and forehead skin, low on eyes, brows and lips
    hair: np.ndarray
    hair_shadow: np.ndarray  # dark, unyellow parts of the hair: recoloured in hue only
    face: np.ndarray  # soft ellipse over brows..chin, where LFW shading is blended
    skin_lab: np.ndarray  # float32 [3] mean Lab of the skin
    hair_lab: np.ndarray  # float32 [3] mean Lab of the hair
    landmarks: np.ndarray  # float32 [5, 2]


def _canvas_ellipse(centre: np.ndarray, axes: tuple[float, float], blur: float) -> np.ndarray:
    """float32 [_CANVAS_H, _CANVAS_W] soft ellipse, 1 inside, fading over ``blur`` px."""
    mask = np.zeros((_CANVAS_H, _CANVAS_W), np.float32)
    cv2.ellipse(mask, (int(centre[0]), int(centre[1])), (int(axes[0]), int(axes[1])), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), blur) if blur > 0 else mask


@functools.cache
def _astronaut_head() -> _HeadSource:
    image = skimage.data.astronaut().astype(np.float32) / 255.0
    ox, oy = int(_CANVAS_ORIGIN[0]), int(_CANVAS_ORIGIN[1])
    padded = cv2.copyMakeBorder(image, -oy, _CANVAS_H, 0, 0, cv2.BORDER_REPLICATE)
    rgb = np.ascontiguousarray(padded[:_CANVAS_H, ox : ox + _CANVAS_W])
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)

    # Matte: the backdrop is a low-contrast pinkish grey, so distance from its colour
    # statistics separates the head; the allowed region follows her jaw, cutting off the
    # turtleneck and spacesuit (identities get a drawn neck and shirt instead).
    backdrop = np.concatenate(
        [
            lab[52:92, 46:86].reshape(-1, 3),
            lab[52:92, 246:281].reshape(-1, 3),
            lab[162:192, 46:76].reshape(-1, 3),
        ]
    )
    scaled = (lab - backdrop.mean(0)) / (3.0 * backdrop.std(0) + 1.0)
    distance = cv2.GaussianBlur(np.sqrt((scaled**2).sum(-1)), (0, 0), 1.5)
    allowed = np.zeros((_CANVAS_H, _CANVAS_W), np.uint8)
    outline = [
        (140, 0),
        (310, 0),
        (310, 140),
        (268, 140),
        (262, 158),
        (246, 172),
        (224, 178),
        (202, 172),
        (187, 158),
        (182, 140),
        (140, 140),
    ]
    cv2.fillPoly(allowed, [np.array(outline, np.int32) - np.array([ox, oy], np.int32)], 1)
    head = (distance > 2.0).astype(np.uint8)
    head = (
        cv2.morphologyEx(head, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9)))
        & allowed
    )
    _, labels = cv2.connectedComponents(head)
    head = (labels == labels[120 - oy, 224 - ox]).astype(np.uint8)
    outside = head.copy()
    cv2.floodFill(outside, np.zeros((_CANVAS_H + 2, _CANVAS_W + 2), np.uint8), (0, 0), 1)
    head |= 1 - outside  # fill holes: highlights on skin can be as pale as the backdrop
    head = cv2.morphologyEx(head, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    matte = cv2.GaussianBlur(head.astype(np.float32), (0, 0), 1.2)
    # Edge pixels carry the light backdrop; give them colours spread from inside the head,
    # or every composite gets a pale halo around the hair.
    inside = cv2.erode(head, np.ones((5, 5), np.uint8)).astype(np.float32)
    spread = cv2.GaussianBlur(rgb * inside[..., None], (0, 0), 3.0) / (
        cv2.GaussianBlur(inside, (0, 0), 3.0)[..., None] + 1e-6
    )
    rgb = np.where(inside[..., None] > 0, rgb, np.clip(spread, 0.0, 1.0)).astype(np.float32)
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)

    landmarks = _ASTRONAUT_LANDMARKS - _CANVAS_ORIGIN
    # Her hair is yellower than her skin (b - a about 23 against 6..9). Brows, eyes, nose and
    # mouth are never hair: blond or grey brows would wash out the dark eye band Haar relies on.
    features = _canvas_ellipse(np.array([224.0, 128.0]) - _CANVAS_ORIGIN, (36, 42), 2.0)
    yellowness = cv2.GaussianBlur(lab[..., 2] - lab[..., 1], (0, 0), 1.5)
    hair = matte * (1.0 - features) / (1.0 + np.exp(-(yellowness - 15.0) / 2.0))
    # Deep shadows in the hair are not yellow. They only get the hair's hue: lightening them
    # would wash out the dark frame around the face that Haar relies on.
    far_from_face = 1.0 - _canvas_ellipse(np.array([224.0, 124.0]) - _CANVAS_ORIGIN, (50, 58), 4.0)
    hair_shadow = matte * (1.0 - hair) * far_from_face * np.clip((55.0 - lab[..., 0]) / 10.0, 0.0, 1.0)
    # Below the ear line the yellowish shadows are jaw, not hair.
    hair *= np.clip((152.0 - oy - np.arange(_CANVAS_H, dtype=np.float32)) / 12.0, 0.0, 1.0)[:, None]
    cheek = lab[125 - oy : 140 - oy, 195 - ox : 210 - ox].reshape(-1, 3).mean(0)
    # Among the features, skin-likeness in chroma keeps teeth, eye whites, irises and lips out
    # of the skin recolour; elsewhere everything is skin, highlights and shadows included.
    chroma = ((lab[..., 1] - cheek[1]) ** 2 + (lab[..., 2] - cheek[2]) ** 2) / (2 * 8.0**2)
    skin_like = 1.0 - features * (1.0 - np.exp(-chroma) * np.clip((lab[..., 0] - 30.0) / 15.0, 0.0, 1.0))
    skin = matte * (1.0 - hair) * skin_like
    face = _canvas_ellipse(landmarks[:4].mean(0) + np.array([0.0, 8.0]), (44, 50), 8.0)

    def mean_lab(weight: np.ndarray) -> np.ndarray:
        return ((lab * weight[..., None]).sum((0, 1)) / weight.sum()).astype(np.float32)

    return _HeadSource(
        rgb, lab, matte, skin, hair, hair_shadow, face, mean_lab(skin), mean_lab(hair), landmarks
    )


@functools.cache
def _lfw_faces() -> np.ndarray:
    """float32 [100, 25, 25] in [0, 1]: the face half of scikit-image's LFW subset."""
    return skimage.data.lfw_subset()[:100].astype(np.float32)


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """float64 [2, 3] least-squares similarity (rotation, uniform scale, shift) taking src points to dst.

    Closed form (Umeyama), so it is deterministic, unlike OpenCV's RANSAC estimators.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    a = (s * d).sum() / (s**2).sum()
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / (s**2).sum()
    rot = np.array([[a, -b], [b, a]])
    return np.hstack([rot, (md - rot @ ms)[:, None]])


# --------------------------------------------------------------------------------------------
# Identities

_SKIN_L = (32.0, 80.0)  # very dark to very light skin, OpenCV Lab lightness
_HAIR_TONES = np.array(  # Lab: black, dark brown, brown, auburn, then the light ones: dark blond, blond, grey
    [[12, 1, 2], [22, 4, 10], [34, 7, 18], [36, 20, 28], [50, 5, 26], [66, 3, 32], [62, 0, 3]], np.float32
)
_DARK_HAIR_TONES = 4
# Below this skin lightness hair is dark: light hair around dark skin is rare, and it inverts the
# dark-frame-around-a-lighter-face contrast that Haar's frontal cascade was trained on.
_LIGHT_HAIR_MIN_SKIN_L = 50.0


@dataclass(frozen=True)
class Identity:
    """One synthetic person: a head-and-shoulders portrait on the canonical canvas.

    rgb: float32 [400, 320, 3] in [0, 1]; alpha: float32 [400, 320] in [0, 1];
    landmarks: float32 [5, 2] canvas (x, y) px of left eye, right eye, nose tip, mouth centre, chin
    (left/right as seen in the image); skin_lab: float32 [3], the skin tone in OpenCV float Lab.
    The face box is about 95 canvas px high.
    """

    rgb: np.ndarray
    alpha: np.ndarray
    landmarks: np.ndarray
    skin_lab: np.ndarray

    @property
    def face_centre(self) -> np.ndarray:
        """float32 [2]: centre of the inner face (eyes..mouth), canvas px."""
        return self.landmarks[:4].mean(0)

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))


def _lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    return np.clip(cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB), 0.0, 1.0)


def _blend_lfw_shading(lab: np.ndarray, src: _HeadSource, rng: np.random.Generator) -> None:
    """Replace part of the astronaut's coarse face shading with an LFW face's, in place."""
    lfw = _lfw_faces()[rng.integers(len(_lfw_faces()))] * 100.0
    warp = _similarity(_LFW_LANDMARKS, src.landmarks[:4])
    lfw_l = cv2.warpAffine(
        lfw, warp, (_CANVAS_W, _CANVAS_H), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
    )
    sigma = 0.9 * float(warp[0, 0] ** 2 + warp[1, 0] ** 2) ** 0.5  # about one LFW pixel
    low_own = cv2.GaussianBlur(lab[..., 0], (0, 0), sigma)
    low_lfw = cv2.GaussianBlur(lfw_l, (0, 0), sigma)
    w = src.face
    m_own, m_lfw = (low_own * w).sum() / w.sum(), (low_lfw * w).sum() / w.sum()
    s_own = np.sqrt(((low_own - m_own) ** 2 * w).sum() / w.sum())
    s_lfw = np.sqrt(((low_lfw - m_lfw) ** 2 * w).sum() / w.sum())
    matched = (low_lfw - m_lfw) * (s_own / max(s_lfw, 1e-3)) + m_own
    lab[..., 0] += rng.uniform(0.2, 0.55) * w * (matched - low_own)


def _recolour(
    lab: np.ndarray, weight: np.ndarray, source: np.ndarray, target: np.ndarray, chroma_keep: float
) -> None:
    """Move the Lab colours under ``weight`` from mean ``source`` to mean ``target``, in place.

    Lightness keeps its relative contrast; chroma deviations are scaled by ``chroma_keep``.
    """
    gain = np.clip(target[0] / source[0], 0.8, 1.2)  # dark skin keeps enough contrast for its features
    new = np.empty_like(lab)
    new[..., 0] = target[0] + (lab[..., 0] - source[0]) * gain
    new[..., 1:] = target[1:] + (lab[..., 1:] - source[1:]) * chroma_keep
    lab += weight[..., None] * (new - lab)


def _streak_texture(rng: np.random.Generator, vertical: float, horizontal: float) -> np.ndarray:
    """float32 [_CANVAS_H, _CANVAS_W] around 1: directional noise, like hair strands or fabric."""
    noise = rng.standard_normal((_CANVAS_H, _CANVAS_W), dtype=np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=horizontal, sigmaY=vertical)
    return 1.0 + noise / (noise.std() + 1e-6) * 0.18


def _over(rgb: np.ndarray, alpha: np.ndarray, layer_rgb: np.ndarray, layer_alpha: np.ndarray) -> None:
    """Composite a layer over (rgb, alpha) in place (straight, not premultiplied, colours)."""
    out_alpha = layer_alpha + alpha * (1.0 - layer_alpha)
    safe = np.maximum(out_alpha, 1e-6)[..., None]
    rgb[:] = (layer_rgb * layer_alpha[..., None] + rgb * (alpha * (1.0 - layer_alpha))[..., None]) / safe
    alpha[:] = out_alpha


def _random_colour(rng: np.random.Generator, lightness: tuple[float, float]) -> np.ndarray:
    """float32 [3] RGB in [0, 1] with random hue and the given Lab lightness range."""
    lab = np.array([[[rng.uniform(*lightness), rng.uniform(-45, 45), rng.uniform(-45, 45)]]], np.float32)
    return _lab_to_rgb(lab)[0, 0]


def _local_warp_maps(
    rng: np.random.Generator, landmarks: np.ndarray, mirror: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random face-geometry change as remap tables (float32 [H, W] each) and moved landmarks [5, 2].

    Gaussian bumps move and scale the eyes, nose, mouth and chin; an affine changes the face's
    aspect ratio (and mirrors it). Backward maps are first-order inverses, fine for small bumps.
    """
    eye_l, eye_r, nose, mouth, chin = landmarks
    spread = rng.normal(0.0, 1.8)
    eye_dy = rng.normal(0.0, 1.5)
    eye_scale = rng.uniform(0.9, 1.12)
    bumps = [  # centre, shift (dx, dy), scale (sx, sy), sigma
        (eye_l, (-spread, eye_dy), (eye_scale, eye_scale), 8.0),
        (eye_r, (spread, eye_dy), (eye_scale, eye_scale), 8.0),
        (nose, (rng.normal(0, 1.0), rng.normal(0, 2.5)), (rng.uniform(0.88, 1.15),) * 2, 10.0),
        (mouth, (0.0, rng.normal(0, 2.5)), (rng.uniform(0.88, 1.15), 1.0), 12.0),
        (chin, (0.0, rng.normal(0, 4.0)), (1.0, 1.0), 16.0),
        (mouth, (0.0, 0.0), (rng.uniform(0.92, 1.1), 1.0), 28.0),  # jaw width
    ]

    def displacement(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx = np.zeros_like(x)
        dy = np.zeros_like(y)
        for centre, (sx_, sy_), (kx, ky), sigma in bumps:
            rx, ry = x - centre[0], y - centre[1]
            g = np.exp(-(rx * rx + ry * ry) / (2.0 * sigma * sigma))
            dx += g * (sx_ + (kx - 1.0) * rx)
            dy += g * (sy_ + (ky - 1.0) * ry)
        return dx, dy

    centre = landmarks[:4].mean(0)
    sx, sy = rng.uniform(0.92, 1.08), rng.uniform(0.94, 1.06)
    flip = -1.0 if mirror else 1.0
    # forward affine: q = centre' + diag(flip*sx, sy) (p - centre), with centre' mirrored about the canvas
    new_centre = np.array([(_CANVAS_W - 1) - centre[0] if mirror else centre[0], centre[1]], np.float32)
    ys, xs = np.mgrid[0:_CANVAS_H, 0:_CANVAS_W].astype(np.float32)
    px = (xs - new_centre[0]) / (flip * sx) + centre[0]
    py = (ys - new_centre[1]) / sy + centre[1]
    dx, dy = displacement(px, py)
    map_x, map_y = px - dx, py - dy

    ldx, ldy = displacement(landmarks[:, 0], landmarks[:, 1])
    moved = landmarks + np.stack([ldx, ldy], 1)
    out = np.stack(
        [
            (moved[:, 0] - centre[0]) * flip * sx + new_centre[0],
            (moved[:, 1] - centre[1]) * sy + new_centre[1],
        ],
        1,
    )
    if mirror:
        out[[0, 1]] = out[[1, 0]]  # the image-left eye is now the other one
    return map_x.astype(np.float32), map_y.astype(np.float32), out.astype(np.float32)


def make_identity(rng: np.random.Generator, skin_lightness: float | None = None) -> Identity:
    """A random person: skin tone, hair, face shape and shading, clothes, glasses, mirroring.

    ``skin_lightness`` (OpenCV Lab L, about 32..80) fixes the skin tone's lightness instead of
    drawing it. Deterministic in ``rng``'s state. Takes tens of milliseconds.
    """
    src = _astronaut_head()
    lab = src.lab.copy()
    _blend_lfw_shading(lab, src, rng)

    drawn = rng.uniform(*_SKIN_L)  # drawn either way, so the override changes nothing else
    skin_l = float(np.clip(skin_lightness, *_SKIN_L)) if skin_lightness is not None else drawn
    # Darker skin is a little redder and more saturated in Lab; keep hues in the human range.
    skin = np.array(
        [skin_l, rng.uniform(7.0, 15.0) + (84 - skin_l) * 0.05, rng.uniform(12.0, 24.0)], np.float32
    )
    _recolour(lab, src.skin, src.skin_lab, skin, chroma_keep=1.0)
    tones = len(_HAIR_TONES) if skin_l >= _LIGHT_HAIR_MIN_SKIN_L else _DARK_HAIR_TONES
    hair = _HAIR_TONES[rng.integers(tones)] + rng.normal(0.0, 2.0, 3).astype(np.float32)
    _recolour(lab, src.hair, src.hair_lab, hair, chroma_keep=0.6)
    lab[..., 1:] += src.hair_shadow[..., None] * (hair[1:] - lab[..., 1:])
    head = _lab_to_rgb(lab)

    rgb = np.zeros((_CANVAS_H, _CANVAS_W, 3), np.float32)
    alpha = np.zeros((_CANVAS_H, _CANVAS_W), np.float32)
    ox, oy = _CANVAS_ORIGIN
    hair_rgb = _lab_to_rgb(np.broadcast_to(hair, (1, 1, 3)))[0, 0]
    if rng.random() < 0.45:  # long hair falling behind the head
        length = int(rng.uniform(200, 260) - oy)
        width = rng.uniform(62, 84)
        shape = np.zeros((_CANVAS_H, _CANVAS_W), np.float32)
        cv2.ellipse(shape, (int(224 - ox), int(105 - oy)), (int(width + 6), 78), 0, 0, 360, 1.0, -1)
        cv2.rectangle(shape, (int(224 - ox - width), int(105 - oy)), (int(224 - ox + width), length), 1.0, -1)
        shape = cv2.GaussianBlur(shape, (0, 0), 2.5)
        strands = hair_rgb * _streak_texture(rng, vertical=9.0, horizontal=0.8)[..., None]
        _over(rgb, alpha, np.clip(strands * 0.85, 0, 1), shape)
    _over(rgb, alpha, *_neck_layer(skin, rng))
    _over(rgb, alpha, head, src.matte)

    shirt = np.zeros((_CANVAS_H, _CANVAS_W), np.float32)
    cv2.ellipse(
        shirt,
        (int(224 - ox), int(rng.uniform(292, 305) - oy)),
        (int(rng.uniform(112, 135)), 100),
        0,
        0,
        360,
        1.0,
        -1,
    )
    cv2.ellipse(shirt, (int(224 - ox), int(200 - oy)), (int(rng.uniform(24, 32)), 14), 0, 0, 360, 0.0, -1)
    shirt = cv2.GaussianBlur(shirt, (0, 0), 1.2)
    fabric = _random_colour(rng, (20, 85)) * _streak_texture(rng, vertical=1.5, horizontal=1.5)[..., None]
    shade = np.linspace(1.05, 0.8, _CANVAS_H, dtype=np.float32)[:, None, None]  # light from above
    _over(rgb, alpha, np.clip(fabric * shade, 0, 1), shirt)

    if rng.random() < 0.2:
        _draw_glasses(rgb, src.landmarks, rng)

    map_x, map_y, landmarks = _local_warp_maps(rng, src.landmarks, mirror=bool(rng.random() < 0.5))
    rgba = np.dstack([rgb * alpha[..., None], alpha])
    rgba = cv2.remap(rgba, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    alpha = np.ascontiguousarray(rgba[..., 3])
    rgb = np.clip(rgba[..., :3] / np.maximum(alpha, 1e-6)[..., None], 0.0, 1.0)
    return Identity(rgb=rgb, alpha=alpha, landmarks=landmarks, skin_lab=skin)


def _neck_layer(skin_lab: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(rgb float32 [H, W, 3], alpha float32 [H, W]): a neck in the skin tone, shadowed under the jaw."""
    ox, oy = _CANVAS_ORIGIN
    half_top, half_bottom = rng.uniform(24, 30), rng.uniform(30, 38)
    outline = np.array(
        [(224 - half_top, 140), (224 + half_top, 140), (224 + half_bottom, 230), (224 - half_bottom, 230)]
    )
    shape = np.zeros((_CANVAS_H, _CANVAS_W), np.float32)
    cv2.fillPoly(shape, [np.round(outline - [ox, oy]).astype(np.int32)], 1.0)
    shape = cv2.GaussianBlur(shape, (0, 0), 1.5)
    rows = np.arange(_CANVAS_H, dtype=np.float32)[:, None] + oy
    shadow = np.clip(0.7 + (rows - 172.0) / 80.0, 0.7, 0.92)  # darkest right under the chin
    cols = (np.arange(_CANVAS_W, dtype=np.float32)[None, :] + ox - 224.0) / half_bottom
    roundness = 1.0 - 0.25 * np.clip(cols, -1, 1) ** 2  # a cylinder, darker at its sides
    lab = np.empty((_CANVAS_H, _CANVAS_W, 3), np.float32)
    lab[...] = skin_lab
    lab[..., 0] *= shadow * roundness
    return _lab_to_rgb(lab), shape


def _draw_glasses(rgb: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> None:
    """Thin frames around both eyes and a bridge, drawn on the canvas in place."""
    colour = tuple(float(c) for c in _random_colour(rng, (5, 30)))
    thickness = 1
    half_w, half_h = rng.uniform(14, 18), rng.uniform(9, 12)
    shift = 8  # fixed-point bits, for sub-pixel anti-aliased drawing
    for eye in landmarks[:2]:
        centre = (int(eye[0] * 2**shift), int((eye[1] + 1.5) * 2**shift))
        axes = (int(half_w * 2**shift), int(half_h * 2**shift))
        cv2.ellipse(rgb, centre, axes, 0, 0, 360, colour, thickness, cv2.LINE_AA, shift)
    left, right = landmarks[0], landmarks[1]
    a = (int((left[0] + half_w) * 2**shift), int((left[1] - 1) * 2**shift))
    b = (int((right[0] - half_w) * 2**shift), int((right[1] - 1) * 2**shift))
    cv2.line(rgb, a, b, colour, thickness, cv2.LINE_AA, shift)


# --------------------------------------------------------------------------------------------
# Backgrounds


@functools.cache
def _texture_images() -> tuple[np.ndarray, ...]:
    """Grey float32 [512, 512] textures in [0, 1]: brick, grass, gravel."""
    return tuple(
        img.astype(np.float32) / 255.0
        for img in (skimage.data.brick(), skimage.data.grass(), skimage.data.gravel())
    )


@functools.cache
def _photo_images() -> tuple[np.ndarray, ...]:
    """RGB float32 photos in [0, 1] without faces (a face in the background would confuse detection)."""
    return tuple(
        img.astype(np.float32) / 255.0
        for img in (skimage.data.coffee(), skimage.data.rocket(), skimage.data.stereo_motorcycle()[0])
    )


def _cover(image: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of ``image`` resized to cover (height, width)."""
    ih, iw = image.shape[:2]
    scale = max(width / iw, height / ih) * rng.uniform(1.0, 1.6)
    big = cv2.resize(
        image, (max(width, round(iw * scale)), max(height, round(ih * scale))), interpolation=cv2.INTER_LINEAR
    )
    y = int(rng.integers(0, big.shape[0] - height + 1))
    x = int(rng.integers(0, big.shape[1] - width + 1))
    return np.ascontiguousarray(big[y : y + height, x : x + width])


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """float32 [height, width, 3] in [0, 1]: a gradient, texture, noise pattern or photo, maybe with shapes."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    xs /= width
    ys /= height
    kind = rng.integers(5)
    c0, c1 = _random_colour(rng, (25, 90)), _random_colour(rng, (25, 90))
    if kind == 0:  # linear gradient
        angle = rng.uniform(0, 2 * np.pi)
        t = np.clip((xs - 0.5) * np.cos(angle) + (ys - 0.5) * np.sin(angle) + 0.5, 0, 1)[..., None]
        bg = c0 * (1 - t) + c1 * t
    elif kind == 1:  # radial gradient, like a lamp on a wall
        cx, cy = rng.uniform(0.1, 0.9, 2)
        t = np.clip(np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2) / rng.uniform(0.5, 1.2), 0, 1)[..., None]
        bg = c0 * (1 - t) + c1 * t
    elif kind == 2:  # a wall or floor texture, tinted
        texture = _cover(_texture_images()[rng.integers(3)], width, height, rng)
        contrast = rng.uniform(0.3, 0.9)
        bg = c0 * (1.0 + contrast * (texture[..., None] - 0.5))
    elif kind == 3:  # smooth multi-scale noise between two colours
        t = np.zeros((height, width), np.float32)
        for octave in range(4):
            cells = 2 + 3 * 2**octave
            coarse = rng.random((cells, cells), dtype=np.float32)
            t += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) / 2**octave
        t = np.clip((t - t.min()) / (np.ptp(t) + 1e-6), 0, 1)[..., None]
        bg = c0 * (1 - t) + c1 * t
    else:  # an out-of-focus photo
        bg = _cover(_photo_images()[rng.integers(len(_photo_images()))], width, height, rng)
    bg = np.ascontiguousarray(bg, dtype=np.float32)
    if rng.random() < 0.6:  # furniture-like shapes: frames, doors, shelves, lamps
        unit = height / 240.0
        for _ in range(int(rng.integers(2, 7))):
            colour = tuple(float(c) for c in _random_colour(rng, (15, 95)))
            x0, y0 = int(rng.uniform(-0.1, 1.0) * width), int(rng.uniform(-0.1, 1.0) * height)
            x1, y1 = x0 + int(rng.uniform(0.05, 0.5) * width), y0 + int(rng.uniform(0.05, 0.6) * height)
            shape = rng.integers(3)
            if shape == 0:
                cv2.rectangle(
                    bg, (x0, y0), (x1, y1), colour, -1 if rng.random() < 0.6 else max(1, int(4 * unit))
                )
            elif shape == 1:
                cv2.circle(bg, (x0, y0), int(rng.uniform(0.03, 0.15) * width), colour, -1, cv2.LINE_AA)
            else:
                cv2.line(bg, (x0, y0), (x1, y1), colour, max(1, int(rng.uniform(1, 6) * unit)), cv2.LINE_AA)
    blur = rng.uniform(0.0, 2.5) * height / 240.0  # depth of field
    if blur > 0.3:
        bg = cv2.GaussianBlur(bg, (0, 0), blur)
    return np.clip(bg, 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Scene: background + moving, turning, lit face + camera


def _wiggle(
    rng: np.random.Generator, amplitude: float, fps: float, speed: float = 1.0
) -> Callable[[float], float]:
    """A smooth random signal t (frame index) -> float, within +-amplitude, around 0.1..0.6 Hz x speed."""
    freqs = speed * rng.uniform(0.08, 0.6, 2) / fps
    phases = rng.uniform(0, 2 * np.pi, 2)
    weights = rng.uniform(0.3, 1.0, 2)
    weights *= amplitude / weights.sum()

    def signal(t: float) -> float:
        return float((weights * np.sin(2 * np.pi * freqs * t + phases)).sum())

    return signal


def _translate(x: float, y: float) -> np.ndarray:
    return np.array([[1, 0, x], [0, 1, y], [0, 0, 1]], np.float64)


def _similarity_3x3(scale: float, angle: float) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float64)


def _turn(yaw: float, pitch: float, focal: float) -> np.ndarray:
    """Homography of a plane facing the camera at distance ``focal`` (px) turned by yaw/pitch (rad)."""
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    rot = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return np.array(
        [[rot[0, 0], rot[0, 1], 0], [rot[1, 0], rot[1, 1], 0], [rot[2, 0] / focal, rot[2, 1] / focal, 1]]
    )


def _warp_into_frame(
    src: np.ndarray, homography: np.ndarray, width: int, height: int
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Warp float32 [h, w, C] (C = 3 or 4) by a 3x3 homography into a width x height frame,
    computing only the box it covers (bilinear, so upsampling blurs as a real warp would).

    Returns ((rows, cols) slices into the frame, float32 [box h, box w, C]), or None when the
    warped image misses the frame.
    """
    sh, sw = src.shape[:2]
    corners = np.array([[0, 0, 1], [sw, 0, 1], [0, sh, 1], [sw, sh, 1]], np.float64) @ homography.T
    corners = corners[:, :2] / corners[:, 2:]
    x0, y0 = np.floor(corners.min(0)).astype(int)
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return None
    shifted = _translate(-x0, -y0) @ homography
    warped = cv2.warpPerspective(
        src,
        shifted,
        (x1 - x0, y1 - y0),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return (slice(y0, y1), slice(x0, x1)), warped


@dataclass
class _Frame:
    """One rendered frame before quantisation.

    clean, noise: float32 [H, W, 3] (the picture in [0, 1], and the camera noise to add to it);
    canvas_to_frame: float64 [3, 3] homography from the identity's canvas to frame px.
    """

    clean: np.ndarray
    noise: np.ndarray
    canvas_to_frame: np.ndarray

    def to_uint8(self) -> np.ndarray:
        """uint8 [H, W, 3] RGB."""
        return _quantise(self.clean + self.noise)


def _quantise(frame: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] from float32 [H, W, 3] in [0, 1] (clipped, rounded)."""
    return cv2.convertScaleAbs(cv2.max(frame, 0.0), alpha=255.0)


def _three(channel: np.ndarray) -> np.ndarray:
    """float32 [H, W, 3] from [H, W] or [H, W, 1]: numpy broadcasts a trailing 1 slowly."""
    channel = channel.reshape(channel.shape[:2])
    return cv2.merge([channel, channel, channel])


class _Scene:
    """A REAL clip's content: one identity in front of a background, moving, turning, lit, filmed.

    ``render(t)`` is a function of the scene and the frame index, except for camera noise, which
    is drawn in frame order, so frames must be rendered 0, 1, 2, ...
    """

    _MARGIN = 0.06  # background border that camera shake and zoom may reveal

    def __init__(self, rng: np.random.Generator, identity: Identity, width: int, height: int, fps: int):
        self.identity = identity
        self.width, self.height = width, height
        mx, my = int(width * self._MARGIN), int(height * self._MARGIN)
        self._bg_offset = (mx, my)
        self.background = _background(rng, width + 2 * mx, height + 2 * my)

        face_px = rng.uniform(0.32, 0.48) * height  # Haar face box height
        self.base_scale = face_px / _FACE_BOX_PX
        self._centre = np.array([rng.uniform(0.32, 0.68) * width, rng.uniform(0.40, 0.52) * height])
        self._focal = 3.0 * face_px
        self._dx = _wiggle(rng, 0.05 * width, fps)
        self._dy = _wiggle(rng, 0.025 * height, fps)
        self._scale = _wiggle(rng, 0.06, fps)
        self._roll = _wiggle(rng, np.radians(6.0), fps)
        self._yaw = _wiggle(rng, np.radians(12.0), fps)
        self._pitch = _wiggle(rng, np.radians(7.0), fps)

        self._shake_x = _wiggle(rng, 0.006 * width, fps, speed=6.0)  # handheld camera: small and quicker
        self._shake_y = _wiggle(rng, 0.006 * height, fps, speed=6.0)
        self._zoom = _wiggle(rng, 0.02, fps)

        self._exposure = _wiggle(rng, 0.08, fps)
        self._tint = [_wiggle(rng, 0.04, fps) for _ in range(3)]
        self._base_tint = rng.uniform(0.92, 1.06, 3).astype(np.float32)
        self._light_angle = rng.uniform(0, 2 * np.pi)
        self._light_swing = _wiggle(rng, 0.8, fps)
        self._light_strength = rng.uniform(0.05, 0.2)
        self._key_light = rng.uniform(-0.2, 0.2)
        self._key_swing = _wiggle(rng, 0.1, fps)

        self._noise_sigma = rng.uniform(1.5, 4.5) / 255.0
        self._noise_rng = np.random.default_rng(rng.integers(2**63))
        # Past ~360p, ISP demosaicing and denoising leave grain a few pixels wide; drawing it
        # at that scale is also what keeps 720p rendering fast.
        self._grain = max(1, round(height / 360))
        xn = (np.arange(_CANVAS_W, dtype=np.float32) - identity.face_centre[0]) / (
            2.2 * identity.eye_distance
        )
        self._key_ramp = np.clip(xn, -1.0, 1.0)
        self._premultiplied = np.dstack([identity.rgb * identity.alpha[..., None], identity.alpha])
        self._xn = (np.arange(width, dtype=np.float32) / width - 0.5)[None, :]
        self._yn = (np.arange(height, dtype=np.float32) / height - 0.5)[:, None]

    def canvas_to_frame(self, t: int) -> np.ndarray:
        """float64 [3, 3]: the face's pose at frame t, including the camera."""
        c = self.identity.face_centre
        scale = self.base_scale * (1.0 + self._scale(t))
        face = (
            _translate(self._centre[0] + self._dx(t), self._centre[1] + self._dy(t))
            @ _similarity_3x3(1.0, self._roll(t))
            @ _turn(self._yaw(t), self._pitch(t), self._focal)
            @ _similarity_3x3(scale, 0.0)
            @ _translate(-c[0], -c[1])
        )
        return self._camera(t) @ face

    def _camera(self, t: int) -> np.ndarray:
        w, h = self.width, self.height
        return (
            _translate(w / 2 + self._shake_x(t), h / 2 + self._shake_y(t))
            @ _similarity_3x3(1.0 + abs(self._zoom(t)), 0.0)
            @ _translate(-w / 2, -h / 2)
        )

    def render(self, t: int) -> _Frame:
        """Frame t: background through the camera, the lit face composited at its pose, lens blur."""
        w, h = self.width, self.height
        camera = self._camera(t)
        bg_to_frame = camera @ _translate(-self._bg_offset[0], -self._bg_offset[1])
        frame = cv2.warpAffine(
            self.background, bg_to_frame[:2], (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )

        # Key light across the face: one cheek brighter than the other, slowly changing.
        gain = np.ones((1, _CANVAS_W, 4), np.float32)
        gain[0, :, :3] = (1.0 + (self._key_light + self._key_swing(t)) * self._key_ramp)[:, None]
        portrait = self._premultiplied * gain
        to_frame = self.canvas_to_frame(t)
        placed = _warp_into_frame(portrait, to_frame, w, h)
        if placed is not None:
            box, rgba = placed
            frame[box] = frame[box] * (1.0 - _three(rgba[..., 3])) + rgba[..., :3]

        angle = self._light_angle + self._light_swing(t)
        light = 1.0 + self._light_strength * (np.cos(angle) * self._xn + np.sin(angle) * self._yn)
        tint = (
            self._base_tint
            * (1.0 + self._exposure(t))
            * (1.0 + np.array([s(t) for s in self._tint], np.float32))
        )
        frame *= cv2.merge([light * np.float32(c) for c in tint])
        frame = cv2.GaussianBlur(frame, (0, 0), 0.6)  # lens softness, so pasted edges are not razor sharp
        return _Frame(clean=frame, noise=self._noise(), canvas_to_frame=to_frame)

    def _noise(self) -> np.ndarray:
        """float32 [H, W, 3]: sensor noise, mostly luminance, some coarser chroma."""
        w, h, g = self.width, self.height, self._grain
        draw = self._noise_rng.standard_normal
        luma = cv2.resize(
            draw(((h + g - 1) // g, (w + g - 1) // g), dtype=np.float32),
            (w, h),
            interpolation=cv2.INTER_LINEAR,
        )
        g *= 2
        chroma = cv2.resize(
            draw(((h + g - 1) // g, (w + g - 1) // g, 3), dtype=np.float32),
            (w, h),
            interpolation=cv2.INTER_LINEAR,
        )
        return self._noise_sigma * (_three(luma) + 0.35 * chroma)


# --------------------------------------------------------------------------------------------
# Face swap


class _FaceSwap:
    """Turns a REAL scene's frames into a FAKE: the donor's inner face pasted over the target's.

    What it leaves behind, each scaled by ``difficulty`` (0 obvious .. 1 subtle): the donor face
    is rendered at a fraction of the target's resolution and upsampled (blur); colour transfer
    towards the target is partial (mismatch at the mask edge); the paste position jitters per
    frame; the pasted face lacks the camera noise; its brightness flickers.
    """

    def __init__(self, scene: _Scene, difficulty: float, rng: np.random.Generator):
        d = float(np.clip(difficulty, 0.0, 1.0))
        target = scene.identity
        # Swappers pick donors who look alike; the harder the fake, the closer the skin tone.
        donor = make_identity(
            rng, skin_lightness=target.skin_lab[0] + rng.normal(0.0, 3.0 + 12.0 * (1.0 - d))
        )
        self._rng = rng
        self._width, self._height = scene.width, scene.height

        # The swap model's square crop around the target's face, in target canvas px.
        side = 1.7 * target.eye_distance * 2.0
        centre = target.face_centre + np.array([0.0, 0.12 * side])
        face_px_in_frame = side * scene.base_scale
        # Resolution of the generator's output relative to the real face's own detail.
        ratio = 0.22 + 0.6 * d
        size = int(np.clip(round(ratio * min(face_px_in_frame, side)), 16, 512))
        self._crop_to_canvas = _translate(centre[0] - side / 2, centre[1] - side / 2) @ _similarity_3x3(
            side / size, 0.0
        )

        # Align the donor to the target's landmarks at full canvas resolution, then shrink with
        # area averaging: a low-resolution generator output, not an aliased one.
        donor_to_crop = _translate(*(side / 2 - centre)) @ np.vstack(
            [_similarity(donor.landmarks[:4], target.landmarks[:4]), [0, 0, 1]]
        )
        full = round(side)
        aligned = cv2.warpAffine(
            donor.rgb,
            donor_to_crop[:2],
            (full, full),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        face = cv2.resize(aligned, (size, size), interpolation=cv2.INTER_AREA)

        mask = np.zeros((size, size), np.float32)
        cx = (target.face_centre[0] - (centre[0] - side / 2)) / side * size
        cy = (target.face_centre[1] + 6.0 - (centre[1] - side / 2)) / side * size
        # Brows to chin, cheek to cheek, like the landmark hull swap tools mask with; shrunk by
        # the feather so the soft edge stays on the target's face.
        feather = (0.025 + 0.05 * d) * size
        axes = (
            0.85 * target.eye_distance / side * size - feather,
            1.05 * target.eye_distance / side * size - feather,
        )
        cv2.ellipse(
            mask,
            (round(cx * 16), round(cy * 16)),
            (int(axes[0] * 16), int(axes[1] * 16)),
            0,
            0,
            360,
            1.0,
            -1,
            cv2.LINE_AA,
            4,
        )
        self._face_and_mask = np.dstack(
            [face, cv2.GaussianBlur(mask, (0, 0), feather)]
        )  # float32 [size, size, 4]

        self._colour_match = 0.45 + 0.52 * d
        self._noise_match = d
        self._jitter_px = (0.035 - 0.03 * d) * size  # crop px, i.e. relative to the face
        self._jitter_rad = np.radians(2.5 - 2.2 * d)
        self._flicker = 0.035 * (1.0 - d)
        self._state = np.zeros(4)

    def apply(self, frame: _Frame) -> np.ndarray:
        """uint8 [H, W, 3]: the FAKE version of a rendered REAL frame."""
        # Landmark jitter of a per-frame face tracker: AR(1), so it wobbles rather than buzzes.
        self._state = 0.5 * self._state + self._rng.standard_normal(4)
        jx, jy, jr, flicker = self._state * np.array(
            [self._jitter_px, self._jitter_px, self._jitter_rad, self._flicker]
        )
        half = self._face_and_mask.shape[0] / 2
        jitter = _translate(half + jx, half + jy) @ _similarity_3x3(1.0, jr) @ _translate(-half, -half)
        crop_to_frame = frame.canvas_to_frame @ self._crop_to_canvas @ jitter

        out = frame.clean + frame.noise
        placed = _warp_into_frame(self._face_and_mask, crop_to_frame, self._width, self._height)
        if placed is None:
            return _quantise(out)
        box, warped = placed
        face, mask = warped[..., :3], _three(warped[..., 3])
        clean = frame.clean[box]
        inside = warped[..., 3] > 0.5
        if inside.sum() >= 16:
            # Reinhard-style colour transfer, only partly applied: the boundary keeps a seam.
            f_mean, f_std = face[inside].mean(0), face[inside].std(0) + 1e-4
            t_mean, t_std = clean[inside].mean(0), clean[inside].std(0) + 1e-4
            c = self._colour_match
            gain = 1.0 + c * (t_std / f_std - 1.0)
            face = (face - f_mean) * gain + f_mean + c * (t_mean - f_mean)
        face = face * (1.0 + flicker)
        noise = frame.noise[box]
        out[box] = clean * (1.0 - mask) + face * mask + noise * (1.0 - mask * (1.0 - self._noise_match))
        return _quantise(out)


# --------------------------------------------------------------------------------------------
# Encoding


class ClipWriter:
    """Streams uint8 [H, W, 3] RGB frames into an H.264 (libx264, yuv420p) mp4 with PyAV.

    Use as a context manager. A keyframe every second, so keyframe sampling has something to
    sample. Same frames in, same bytes out: single-threaded x264 (the bytes do not depend on the
    core count) without macroblock-tree rate control, because with it PyAV's bundled x264
    (core 165) gave different bytes for identical input depending on the process's heap state.
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: int, crf: int = CRF):
        if width % 2 or height % 2:
            raise ValueError(f"H.264 yuv420p needs even frame sizes, got {width}x{height}")
        self.path = Path(path)
        self.width, self.height = width, height
        self._container = av.open(str(self.path), mode="w")
        self._stream = self._container.add_stream("libx264", rate=fps)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._stream.codec_context.gop_size = fps
        self._stream.thread_count = 1
        self._stream.options = {"crf": str(crf), "preset": _PRESET, "x264-params": "mbtree=0"}
        self._time_base = Fraction(1, fps)
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        """Encode one uint8 [H, W, 3] RGB frame."""
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 frame of shape {(self.height, self.width, 3)}, got {frame.dtype} {frame.shape}"
            )
        video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
        video_frame.pts, video_frame.time_base = self.frames, self._time_base
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_clip(path: str | Path, frames: Iterable[np.ndarray], fps: int, crf: int = CRF) -> None:
    """Encode uint8 [H, W, 3] RGB frames (all the same, even, size) as an H.264 yuv420p mp4."""
    writer: ClipWriter | None = None
    try:
        for frame in frames:
            if writer is None:
                writer = ClipWriter(path, frame.shape[1], frame.shape[0], fps, crf)
            writer.write(frame)
        if writer is None:
            raise ValueError("write_clip needs at least one frame")
    finally:
        if writer is not None:
            writer.close()


# --------------------------------------------------------------------------------------------
# Datasets


def _clip_names(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct random 10-letter lowercase names, DFDC style."""
    letters = np.array(list(string.ascii_lowercase))
    names: list[str] = []
    while len(names) < count:
        name = "".join(rng.choice(letters, 10))
        if name not in names:
            names.append(name)
    return names


def _split_evenly(total: int, parts: int) -> list[int]:
    return [total // parts + (k < total % parts) for k in range(parts)]


def _render_group(scene: _Scene, swaps: list[_FaceSwap], paths: list[Path], frames: int, fps: int) -> None:
    """Render a REAL scene once and write it (paths[0]) and its FAKEs (paths[1:]) side by side."""
    writers = [ClipWriter(p, scene.width, scene.height, fps) for p in paths]
    try:
        for t in range(frames):
            frame = scene.render(t)
            writers[0].write(frame.to_uint8())
            for swap, writer in zip(swaps, writers[1:]):
                writer.write(swap.apply(frame))
    finally:
        for writer in writers:
            writer.close()


def _checked_frame_count(width: int, height: int, fps: int, seconds: float, difficulty: float) -> int:
    """Frames per clip, after refusing arguments no clip can be made from (ValueError)."""
    if width < 64 or height < 64 or width % 2 or height % 2:
        raise ValueError(f"frame size must be even and at least 64x64, got {width}x{height}")
    if fps < 1 or seconds <= 0:
        raise ValueError(f"need fps >= 1 and seconds > 0, got fps={fps} seconds={seconds}")
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
    return max(1, round(fps * seconds))


def generate_dataset(
    out_dir: str | Path,
    videos: int = 8,
    *,
    seed: int = 0,
    width: int = 320,
    height: int = 240,
    fps: int = 15,
    seconds: float = 2.0,
    fake_ratio: float = 0.5,
    difficulty: float = 0.5,
    parts: int = 1,
) -> Path:
    """Write DFDC-layout folders ``out_dir/dfdc_train_part_{k}/`` with metadata.json and H.264 mp4s.

    ``videos`` clips in all (REAL + FAKE), spread evenly over ``parts`` folders. About
    ``fake_ratio`` of them are FAKE, but every part with clips keeps at least one REAL, since
    each FAKE's ``original`` is a REAL clip of the same part (FAKEs are dealt round-robin over
    the part's REALs). Clips are ``seconds * fps`` frames of width x height (both even).
    ``difficulty`` in [0, 1] scales the swap artefacts from obvious (0) to subtle (1).
    Deterministic in ``seed``: same metadata and decoded frames on every run. Returns out_dir.
    """
    frames = _checked_frame_count(width, height, fps, seconds, difficulty)
    if parts < 1 or videos < parts:
        raise ValueError(f"need 1 <= parts <= videos, got parts={parts} videos={videos}")
    if not 0.0 <= fake_ratio <= 1.0:
        raise ValueError(f"fake_ratio must be in [0, 1], got {fake_ratio}")
    out_dir = Path(out_dir)
    per_part = _split_evenly(videos, parts)
    fakes_per_part = [
        min(f, v - 1) for f, v in zip(_split_evenly(round(videos * fake_ratio), parts), per_part)
    ]
    names = iter(_clip_names(np.random.default_rng([seed, 0]), videos))

    for k, (count, n_fake) in enumerate(zip(per_part, fakes_per_part)):
        part_dir = out_dir / f"dfdc_train_part_{k}"
        part_dir.mkdir(parents=True, exist_ok=True)
        n_real = count - n_fake
        real_names = [f"{next(names)}.mp4" for _ in range(n_real)]
        fake_names = [f"{next(names)}.mp4" for _ in range(n_fake)]
        metadata: dict[str, dict[str, str | None]] = {}
        for i, real_name in enumerate(real_names):
            metadata[real_name] = {"label": "REAL", "split": "train", "original": None, "source": "synthetic"}
            identity = make_identity(np.random.default_rng([seed, 1, k, i]))
            scene = _Scene(np.random.default_rng([seed, 2, k, i]), identity, width, height, fps)
            swaps, paths = [], [part_dir / real_name]
            for j in range(i, n_fake, n_real):
                swaps.append(_FaceSwap(scene, difficulty, np.random.default_rng([seed, 3, k, j])))
                paths.append(part_dir / fake_names[j])
                metadata[fake_names[j]] = {"label": "FAKE", "split": "train", "original": real_name, "source": "synthetic"}
            _render_group(scene, swaps, paths, frames, fps)
        (part_dir / "metadata.json").write_text(json.dumps(dict(sorted(metadata.items()))))
    return out_dir


def render_sample_clip(
    path: str | Path,
    *,
    fake: bool,
    seed: int,
    width: int = 320,
    height: int = 240,
    fps: int = 15,
    seconds: float = 2.0,
    difficulty: float = 0.5,
) -> None:
    """Write one H.264 clip to ``path``, deterministic in the arguments.

    A REAL clip, or with ``fake=True`` a FAKE made from the REAL clip that the same seed, size,
    fps and seconds give, so the two can be compared frame by frame.
    """
    frames = _checked_frame_count(width, height, fps, seconds, difficulty)
    scene = _Scene(
        np.random.default_rng([seed, 2]), make_identity(np.random.default_rng([seed, 1])), width, height, fps
    )
    with ClipWriter(path, width, height, fps) as writer:
        swap = _FaceSwap(scene, difficulty, np.random.default_rng([seed, 3])) if fake else None
        for t in range(frames):
            frame = scene.render(t)
            writer.write(swap.apply(frame) if swap else frame.to_uint8())
