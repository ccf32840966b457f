"""The face swap: a donor face aligned to the target's landmarks, rendered low-res, colour-transferred,
pasted through a feathered mask and re-aligned each frame with jitter; ``difficulty`` scales it."""

from __future__ import annotations

import cv2
import numpy as np

from trainer.synth.heads import _similarity
from trainer.synth.identity import make_identity
from trainer.synth.scene import (
    _Frame,
    _quantise,
    _Scene,
    _similarity_3x3,
    _three,
    _translate,
    _warp_into_frame,
)


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
