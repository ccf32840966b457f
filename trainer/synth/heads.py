"""Face sources: the astronaut portrait (sharp detail, hair, head shape) and the LFW faces
(coarse shading), on a canonical portrait canvas with landmarks."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
import skimage.data

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
