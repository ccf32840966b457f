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

Only numpy, OpenCV, PyAV and scikit-image are used, so importing this package is cheap.

Modules: :mod:`.heads` (face sources), :mod:`.identity` (identities), :mod:`.backgrounds`,
:mod:`.scene` (motion, lighting, camera), :mod:`.swap` (the face swap), :mod:`.writer` (H.264),
:mod:`.dataset` (DFDC layout, sample clips).
"""

from trainer.synth.dataset import generate_dataset, render_real_frames, render_sample_clip
from trainer.synth.identity import Identity, make_identity
from trainer.synth.writer import CRF, ClipWriter, write_clip

__all__ = ["CRF", "ClipWriter", "Identity", "generate_dataset", "make_identity", "render_real_frames", "render_sample_clip", "write_clip"]
