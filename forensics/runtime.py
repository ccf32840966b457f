"""ONNX Runtime wrapper for the discriminator: uint8 crops in, logits and tapped features out."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from forensics.errors import ModelError
from forensics.logs import get_logger
from forensics.probability import sigmoid


@dataclass
class Inference:
    logits: np.ndarray  # float32 [N]; > threshold means FAKE
    features: list[np.ndarray]  # per tapped layer, float32 [N, C_l]: spatial means of the block's map
    stds: list[np.ndarray] = dataclasses.field(default_factory=list)  # per layer [N, C_l]: spatial std; [] if absent

    @property
    def fake_prob(self) -> np.ndarray:
        return sigmoid(self.logits)

    def split(self, n: int) -> list[Inference]:
        """Consecutive parts of ``n`` crops each (the inputs of one batched call, e.g. crops + squeezed crops)."""
        cut = range(0, len(self.logits), n)
        return [Inference(self.logits[i : i + n], [f[i : i + n] for f in self.features], [s[i : i + n] for s in self.stds])
                for i in cut]  # fmt: skip


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 [N, S, S, 3] RGB -> float32 [N, 3, S, S] in [0, 1] (the model normalizes inside)."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) * np.float32(1 / 255)


def choose_providers(preferred: Sequence[str]) -> list[str]:
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    chosen = [p for p in preferred if p in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


class OnnxDiscriminator:
    """One ONNX Runtime session over ``model.onnx`` with outputs ``logits, feat0, feat1, ...`` and, in
    versions with the issue-8 defence, ``std0, std1, ...`` (per-channel spatial std of each block)."""

    def __init__(self, model_path: str | Path, *, providers: Sequence[str] = ("CPUExecutionProvider",),
                 intra_op_threads: int = 0):  # fmt: skip
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if intra_op_threads:
            opts.intra_op_num_threads = intra_op_threads
        opts.log_severity_level = 3  # no warnings about unavailable providers on CPU-only hosts
        # Idle ORT threads otherwise spin after each run and starve the numpy scorer that follows
        # (3x slower end to end on 2 cores; bench/pipeline.py).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(model_path), opts, providers=choose_providers(providers))
        except Exception as err:  # onnxruntime raises its own exception types for bad files
            raise ModelError(f"cannot load ONNX model {model_path}: {str(err).splitlines()[0]}") from None
        inputs = self.session.get_inputs()
        outputs = [o.name for o in self.session.get_outputs()]
        if len(inputs) != 1 or not outputs or outputs[0] != "logits":
            raise ModelError(f"{model_path}: expected one input and outputs logits, feat0..., got {outputs}")
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        self.input_size = int(shape[-1]) if isinstance(shape[-1], int) else None
        self.output_names = outputs
        self.feature_names = [o for o in outputs[1:] if o.startswith("feat")]
        self.std_names = [o for o in outputs[1:] if o.startswith("std")]
        self.provider = self.session.get_providers()[0]
        get_logger().info("onnx session ready", model=str(model_path), provider=self.provider)

    def run(self, images_u8: np.ndarray) -> Inference:
        """images: uint8 [N, S, S, 3] RGB."""
        return self.run_float(to_model_input(images_u8))

    def run_float(self, x: np.ndarray) -> Inference:
        """x: float32 [N, 3, S, S] in [0, 1]."""
        outs = dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: x})))
        return Inference(logits=np.asarray(outs["logits"], np.float32).reshape(-1),
                         features=[np.asarray(outs[n]) for n in self.feature_names],
                         stds=[np.asarray(outs[n]) for n in self.std_names])  # fmt: skip
