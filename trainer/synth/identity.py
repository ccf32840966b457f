"""Identities: the astronaut head recoloured and reshaped (skin tone, hair colour and style, face
geometry, LFW shading, clothing, glasses), so no two clips need share a face."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from trainer.synth.heads import (
    _CANVAS_H,
    _CANVAS_ORIGIN,
    _CANVAS_W,
    _LFW_LANDMARKS,
    _astronaut_head,
    _HeadSource,
    _lfw_faces,
    _similarity,
)

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
