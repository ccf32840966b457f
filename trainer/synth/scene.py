"""A scene: background + moving, turning, lit face + camera (motion, exposure, noise)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from trainer.synth.backgrounds import _background
from trainer.synth.heads import _CANVAS_W, _FACE_BOX_PX
from trainer.synth.identity import Identity


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
