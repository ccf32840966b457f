"""The one settings object.

Sources of values, highest priority first: keyword arguments, environment variables
(``FORENSICS_`` prefix, ``__`` between nested names, e.g. ``FORENSICS_INGEST__BATCH_SIZE=8``),
a ``.env`` file in the working directory, a TOML file given with ``--config``, defaults.

Every model rejects unknown keys, so a typo fails at start-up with one line naming the key
(see :func:`load_settings`), instead of being silently ignored.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from croniter import CroniterBadDateError, CroniterError, croniter
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from forensics.errors import ConfigError
from forensics.redact import redact

ENV_PREFIX = "FORENSICS_"



def next_cron_time(expr: str, after: float) -> float:
    """Unix time of the first minute strictly after ``after`` (unix s) matching ``expr``, a five-field
    cron expression in UTC (croniter: names like ``mon`` and Vixie cron's either-day rule included).

    Raises ValueError with one line for anything else, or an expression that never matches."""
    fields = len(expr.split())
    if fields != 5:
        raise ValueError(f"cron {expr!r} has {fields} fields, needs 5: minute hour day-of-month month day-of-week "
                         "(e.g. '0 3 * * *' for 03:00 UTC daily)")  # fmt: skip
    try:
        return float(croniter(expr, datetime.fromtimestamp(after, timezone.utc)).get_next(float))
    except CroniterBadDateError:
        raise ValueError(f"cron {expr!r} never matches (e.g. day 31 of a 30-day month)") from None
    except CroniterError as err:
        raise ValueError(f"cron {expr!r}: {str(err).splitlines()[0]}") from None

class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RedisSettings(_Section):
    url: str | None = Field(
        None,
        description="redis://, rediss:// (TLS) or unix:// URL, with user:password for ACLs. "
        "Unset: start an embedded redis-server on a unix socket in state_dir.",
    )
    prefix: str = Field("forensics", min_length=1, description="Prefix of every Redis key.")
    cluster: bool = Field(
        False, description="url is a node of a Redis Cluster: use the cluster client (keys are hash-tagged)."
    )
    shards: int = Field(
        1, ge=1, le=1024,
        description="Streams the frames are split into, by source (on a cluster: a multiple of the masters). "
        "Every process must use the same value; change it only with an empty backlog.",
    )  # fmt: skip
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to wait for a connection.")
    socket_timeout: float = Field(30.0, gt=0, description="Seconds to wait for a reply.")
    retry_base_s: float = Field(0.1, gt=0, description="After a lost connection, the first retry waits up to 2x this.")
    retry_cap_s: float = Field(
        5.0, gt=0, description="Longest wait between reconnection attempts (exponential backoff with jitter), seconds."
    )

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v


class LimitSettings(_Section):
    max_bytes: int = Field(4 * 1024**3, gt=0, description="Largest accepted file, bytes.")
    max_width: int = Field(4096, gt=0, description="Widest accepted video, pixels.")
    max_height: int = Field(4096, gt=0, description="Tallest accepted video, pixels.")
    max_duration: float = Field(4 * 3600.0, gt=0, description="Longest accepted video, seconds.")


class IngestSettings(_Section):
    watch_dir: Path | None = Field(None, description="Folder watched for dropped video files.")
    done_dir: Path | None = Field(None, description="Where finished files go. Default: <watch_dir>/done.")
    failed_dir: Path | None = Field(
        None, description="Where unusable files go, with a .reason file. Default: <watch_dir>/failed."
    )
    sample: Literal["every_nth", "fps", "keyframes"] = Field(
        "fps", description="Which decoded frames are kept: every Nth, a target rate by timestamp, or keyframes."
    )
    every_nth: int = Field(1, ge=1, description="With sample=every_nth: keep frame 0, N, 2N, ...")
    fps: float = Field(2.0, gt=0, description="With sample=fps: frames kept per second of video.")
    frame_size: int | None = Field(
        None, ge=16, le=1024,
        description="Side of the square images put on the stream. Unset: the current model's input size, else 256.",
    )  # fmt: skip
    batch_size: int = Field(16, ge=1, le=1024, description="Images per FrameBatch.")
    decode_threads: int = Field(0, ge=0, description="PyAV decoder threads; 0 lets FFmpeg choose.")
    stable_seconds: float = Field(
        1.0, ge=0, description="A dropped file is taken once its size and mtime are unchanged this long."
    )
    poll_interval: float = Field(0.5, gt=0, description="Seconds between scans of the watch folder.")
    incomplete_timeout_s: float = Field(
        600.0, gt=0,
        description="An MP4 without its index or a TS cut mid-packet waits for its writer this long "
        "(unchanged), then the decoder judges it.",
    )  # fmt: skip
    source_ttl_s: int = Field(
        7 * 24 * 3600, ge=60, description="A dropped file's state hash (forensics:sources:<id>) expires after this, s."
    )
    high_water: int = Field(
        2000, ge=1, description="File sources block while this many stream entries are unacknowledged."
    )
    limits: LimitSettings = Field(default_factory=LimitSettings)
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Prometheus metrics port of the ingest process (live sources); unset: off."
    )


class FaceSettings(_Section):
    detector: Literal["blazeface", "haar", "onnx", "none"] = Field(
        "blazeface",
        description="blazeface: MediaPipe BlazeFace + face mesh (five landmarks, packaged); haar: OpenCV "
        "cascade (no landmarks); onnx: a YuNet-style model file; none: whole frames.",
    )
    onnx_model: Path | None = Field(None, description="With detector=onnx: path of the face model file.")
    detect_width: int = Field(640, ge=64, description="Frames are downscaled to this width for detection.")
    margin: float = Field(1 / 3, ge=0, le=2, description="Crop margin on each side, as a share of the box.")
    max_faces: int = Field(4, ge=1, description="Most faces kept per frame (largest first).")
    min_face: int = Field(40, ge=8, description="Smallest face side searched for, in full-resolution pixels.")
    iou_match: float = Field(0.3, gt=0, lt=1, description="IoU above which a box continues a track.")
    min_score: float = Field(
        0.5, gt=0, lt=1, description="blazeface: lowest detection score that starts a track."
    )
    continue_score: float = Field(
        0.3,
        gt=0,
        lt=1,
        description="blazeface: lowest score that continues an existing track (ByteTrack's low stage).",
    )
    max_missed: int = Field(5, ge=0, description="Sampled frames a face track coasts without a detection.")
    redetect_every: int = Field(
        1,
        ge=1,
        description="blazeface: run the detector on at least every N-th sampled frame; in between the "
        "landmark model follows the faces found (1: detect on every sampled frame).",
    )
    max_jump: float = Field(
        1.0, ge=0, description="Largest move between sampled frames, in face sizes, that continues a track."
    )


class LiveSourceSettings(_Section):
    """One live camera. Policy: stay current (drop the oldest samples at the source, never block)."""

    id: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Stable name of the source.")
    url: str = Field(
        ..., description="rtsp:// URL (or any URL PyAV opens), with user:password if the camera needs them."
    )
    fps: float = Field(2.0, gt=0, le=120, description="Frames sampled per second, by timestamp.")
    keyframes_only: bool = Field(
        False,
        description="Decode keyframes only (cheap, low rate). Set stall_timeout above the camera's keyframe interval.",
    )
    decode_threads: int = Field(
        1, ge=0, le=64, description="FFmpeg decoder threads; 0 lets FFmpeg choose (each thread adds a frame of delay)."
    )
    open_timeout: float = Field(5.0, gt=0, le=300, description="Seconds a camera has to answer and describe its stream.")
    read_timeout: float = Field(
        5.0, gt=0, le=300, description="Seconds a read may wait for data before the connection is dropped."
    )
    stall_timeout: float = Field(
        10.0, gt=0, le=3600, description="Watchdog: a stream that yields no frame this long is restarted."
    )
    backoff_initial: float = Field(0.5, gt=0, le=3600, description="First delay before reconnecting, seconds.")
    backoff_max: float = Field(30.0, gt=0, le=3600, description="Longest delay between reconnects, seconds.")
    backoff_jitter: float = Field(
        0.2, ge=0, le=1, description="Each delay is scaled by a random factor in [1-jitter, 1+jitter] (then capped)."
    )
    stable_after: float = Field(
        30.0, ge=0, description="Seconds of streaming after which the backoff starts again from backoff_initial."
    )
    down_after: float = Field(
        10.0, ge=0, description="Not streaming this long raises a `source` down alert (an up alert follows recovery)."
    )
    max_pending: int = Field(
        4, ge=1, le=1000, description="Samples waiting at the source to be sent; when full the oldest is dropped."
    )
    max_backlog: int = Field(
        1000,
        ge=1,
        description="While the detect group has this many unacknowledged entries, nothing is sent and the "
        "oldest pending samples are dropped.",
    )

    @field_validator("url")
    @classmethod
    def _has_scheme(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$", v):
            raise ValueError("must be a URL like rtsp://host:554/path")
        return v

    @model_validator(mode="after")
    def _consistent_times(self) -> LiveSourceSettings:
        if self.backoff_max < self.backoff_initial:
            raise ValueError(f"backoff_max ({self.backoff_max}) is below backoff_initial ({self.backoff_initial})")
        if self.stall_timeout < self.read_timeout:
            raise ValueError(
                f"stall_timeout ({self.stall_timeout}) is below read_timeout ({self.read_timeout}): "
                "a stuck read is only noticed after read_timeout"
            )
        return self


class DetectSettings(_Section):
    consumer: str | None = Field(None, description="Consumer name in the group; default host-pid.")
    max_batch: int = Field(64, ge=1, description="Most images per model call (small batches are coalesced).")
    block_ms: int = Field(1000, ge=1, description="XREADGROUP block time, ms.")
    claim_idle_ms: int = Field(30000, ge=100, description="Entries pending this long are reclaimed.")
    max_deliveries: int = Field(3, ge=1, description="After this many deliveries an entry is dead-lettered.")
    providers: list[str] = Field(
        default_factory=lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        description="ONNX Runtime providers in order of preference; unavailable ones are skipped.",
    )
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads; 0: its default.")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="Prometheus metrics port; unset: off.")
    read_count: int = Field(8, ge=1, description="Stream entries read per XREADGROUP (coalesced into model calls).")
    window_s: float = Field(10.0, gt=0, description="Live sources: sliding window of the deepfake score, seconds.")
    hysteresis: float = Field(0.05, ge=0, lt=0.5, description="Live alerts fire above threshold+h, re-arm below threshold-h.")
    min_window_faces: int = Field(5, ge=1, description="Live alerts need at least this many crops in the window.")
    anomaly_rate: float = Field(
        0.5, gt=0, le=1, description="Share of anomalous crops (window or file) that raises an anomaly alert."
    )
    evidence_ttl_s: int = Field(
        7 * 24 * 3600, ge=60, description="How long the evidence crops of alerts are kept in Redis, seconds."
    )
    evidence_per_file: int = Field(
        8, ge=1, description="Files: evidence crops kept per file (the most fake-looking and most anomalous)."
    )
    dead_maxlen: int = Field(
        10_000, ge=10, description="Dead-letter stream length cap (entries keep meta and error, never pixels)."
    )
    consumer_idle_s: float = Field(
        24 * 3600.0, gt=0,
        description="Consumers of the group idle this long with nothing pending are removed, seconds.",
    )  # fmt: skip


class QualitySettings(_Section):
    """The input-quality gate (forensics/quality.py); defaults measured by ``python bench/quality.py``."""

    enabled: bool = Field(True, description="Mark blurred, block-coded, tiny and faceless crops low_quality (blur, blocky, tiny_face, no_face).")
    min_focus: float = Field(0.06, ge=0, description="Focus (Laplacian variance / variance, 64 px grey) below this: blur.")
    max_blockiness: float = Field(1.52, gt=0, description="Step on the 8x8 codec grid / step mid-block above this: blocky.")
    min_face_px: int = Field(34, ge=0, description="Face box side below this many source pixels: tiny_face.")
    face_check: Literal["auto", "on", "off"] = Field(
        "auto", description="no_face: run the model's crop detector on each crop (BlazeFace ~5 ms a crop). auto: only in "
        "whole-frame mode (faces.detector = none); face mode's crops already came from a detector.")


class AlertSettings(_Section):
    """What published scores reveal (forensics/disclosure.py): alerts, results stream, scan, web API."""

    scores: Literal["full", "rounded", "label"] = Field(
        "label",
        description="full: scores as computed; rounded: to score_decimals; label: no continuous score "
        "(labels, counts and rates only). Scores are a membership-inference/inversion oracle: rounding to "
        "1-4 decimals left the attack's AUC unchanged, label brought it to chance (README: Privacy).",
    )
    score_decimals: int = Field(
        2, ge=0, le=8, description="With scores=rounded: decimals of probabilities and rates "
        "(anomaly scores keep this many significant digits plus one).",
    )  # fmt: skip


class RetrainSettings(_Section):
    """Scheduled retraining (``forensics trainer`` / ``forensics retrain --now``)."""

    interval_s: float = Field(
        24 * 3600.0, gt=0, description="Seconds between runs (counted from the last run's start); unused when cron is set."
    )
    cron: str | None = Field(
        None, description="Five-field cron expression in UTC (e.g. '0 3 * * *'); overrides interval_s when set."
    )
    data_dirs: list[Path] = Field(
        default_factory=list, description="DFDC-format folders of new labelled clips, screened before each run."
    )
    base_data: list[Path] = Field(
        default_factory=list, description="Training data the candidate always learns from. Empty: the current model's."
    )
    holdout_dir: Path | None = Field(
        None,
        description="DFDC-format folder the gate evaluates both models on (never trained on). "
        "Unset: the current model's held-out test split of its base data.",
    )
    cache_dir: Path | None = Field(None, description="Face crop cache. Default: <state_dir>/crops.")
    lock_ttl_s: float = Field(
        60.0, ge=1, description="The retraining lock expires this long after its last renewal (renewed every third)."
    )
    gan_epochs: int | None = Field(None, ge=0, description="Candidate's GAN epochs. Unset: the current model's recipe.")
    adv_epochs: int | None = Field(None, ge=0, description="Candidate's adversarial epochs. Unset: the current model's.")
    warm_start: bool = Field(True, description="Start the candidate from the current model's weights (fine-tune).")
    threads: int = Field(0, ge=0, description="torch threads for training; 0: torch's default.")
    max_new_share: float = Field(
        0.5, gt=0, description="Accepted new crops per run, at most this share of the base training crops."
    )
    max_source_share: float = Field(
        0.25, gt=0, description="Accepted new crops from one source (folder or alert source), as a share of base crops."
    )
    outlier_quantile: float = Field(
        0.995, gt=0.5, le=1,
        description="A new sample is an outlier when its median Mahalanobis score is above this quantile "
        "of the current model's clean validation crops (crops of one clip are alike, so keep it high).",
    )  # fmt: skip
    flip_quantile: float = Field(
        0.95, gt=0.5, lt=1,
        description="A label the current model disagrees with is a suspicious flip when the sample is closer to "
        "the other class mean by more than this quantile of correctly labelled validation crops (and at least 0).",
    )  # fmt: skip
    source_alpha: float = Field(
        0.01, gt=0, lt=1,
        description="A source is untrusted (all its samples quarantined) when its labels disagree with the current "
        "model more often than its validation error rate allows at this significance (one-sided binomial).",
    )
    auc_margin: float = Field(
        0.01, ge=0, le=1, description="The gate promotes only if the candidate's clean frame AUC is at most this below."
    )
    asr_tolerance: float = Field(
        0.02, ge=0, le=1,
        description="...and its PGD 4/255 attack success rate at most this above the current model's "
        "(sampling noise of a small held-out set).",
    )  # fmt: skip
    gate_max_fakes: int = Field(100, ge=1, description="Correctly detected held-out fakes attacked per model.")
    refine: bool = Field(
        False, description="Let the anomaly rate on new data move the next run's PGD radius (trainer/refine.py)."
    )
    eps_min: float = Field(2 / 255, gt=0, le=1, description="With refine: smallest training radius (L-inf, [0,1] pixels).")
    eps_max: float = Field(12 / 255, gt=0, le=1, description="With refine: largest training radius.")
    label_crop_ttl_s: int = Field(
        90 * 24 * 3600, ge=60, description="How long the crops of analyst-labelled alerts are kept in Redis, seconds."
    )

    @model_validator(mode="after")
    def _eps_bounds(self) -> RetrainSettings:
        if self.eps_max < self.eps_min:
            raise ValueError(f"eps_max ({self.eps_max}) is below eps_min ({self.eps_min})")
        return self

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, v: str | None) -> str | None:
        if v is not None:
            next_cron_time(v, 0.0)  # raises ValueError with one line
        return v


class WebUser(_Section):
    """One console user. viewer: read; analyst: also label alerts; admin: also promote/roll back models."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.@-]{1,64}$", description="Login name (recorded as `by` on labels).")
    role: Literal["viewer", "analyst", "admin"] = Field("viewer", description="What the user may do.")
    password_hash: str | None = Field(
        None, description="argon2 hash of the password (`forensics web --hash-password` prints one); unset: no login."
    )
    token_sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$",
        description="sha256 (hex) of an API token sent as `Authorization: Bearer <token>`; unset: no token.",
    )  # fmt: skip


class WebSettings(_Section):
    """The console (`forensics web`). Without users it serves only on a loopback address."""

    host: str = Field("127.0.0.1", description="Address to bind. Anything but loopback needs `users`.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0: any free port).")
    users: list[WebUser] = Field(default_factory=list, description="Who may sign in, with which role.")
    local_role: Literal["viewer", "analyst", "admin"] | None = Field(
        "analyst", description="Role of every visitor when no users are configured (loopback only); unset: refuse."
    )
    session_secret: SecretStr | None = Field(
        None, description="Key that signs session cookies; unset: a random one per process (sign-ins end on restart)."
    )
    session_max_age_s: int = Field(12 * 3600, ge=60, description="A sign-in lasts this long, seconds.")
    secure_cookies: bool = Field(False, description="Send the session cookie over HTTPS only (set behind TLS).")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the console answers to besides the bind address (loopback names always).",
    )
    explain_timeout_s: float = Field(180.0, gt=0, description="Longest a saliency figure may take, seconds.")


class Settings(BaseSettings):
    """Everything a process of the daemon can be told. One instance per process."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
        validate_assignment=True,
    )

    state_dir: Path = Field(Path(".forensics"), description="Embedded Redis data, caches, checkpoints.")
    models_dir: Path = Field(Path("models"), description="Model registry root (versions and `current`).")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: readable on a terminal, JSON lines otherwise."
    )
    redis: RedisSettings = Field(default_factory=RedisSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    faces: FaceSettings = Field(default_factory=FaceSettings)
    sources: list[LiveSourceSettings] = Field(default_factory=list, description="Live (RTSP) sources.")
    detect: DetectSettings = Field(default_factory=DetectSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)
    web: WebSettings = Field(default_factory=WebSettings)

    @model_validator(mode="after")
    def _unique_source_ids(self) -> Settings:
        ids = [s.id for s in self.sources]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate source ids: {', '.join(sorted(dup))}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        toml = _TOML_FILE.get("path")
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)


# The TOML path is chosen at run time (--config), but pydantic-settings asks the class for its
# sources, so the path is handed over here for the duration of one load_settings call.
_TOML_FILE: dict[str, Path | None] = {"path": None}


def _format_validation_error(err: ValidationError) -> str:
    problems = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(settings)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        elif "input" in e and not isinstance(e["input"], dict | list):
            msg = f"{msg} (got {e['input']!r})"
        problems.append(f"{key}: {msg}")
    return redact("bad setting " + "; ".join(problems))


def _unknown_env_keys() -> list[str]:
    known = {name.upper() for name in Settings.model_fields}
    unknown = []
    for var in os.environ:
        if var.startswith(ENV_PREFIX):
            top = var[len(ENV_PREFIX) :].split("__", 1)[0]
            if top not in known:
                unknown.append(var)
    return unknown


def resolve_frame_size(settings: Settings) -> int:
    """ingest.frame_size, or the promoted model's input size, or 256; stored back in the settings."""
    if settings.ingest.frame_size is None:
        from forensics.registry import Registry

        settings.ingest.frame_size = Registry(settings.models_dir).current_input_size() or 256
    return settings.ingest.frame_size


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings, or raise ConfigError with one line naming each bad key."""
    if config_file is not None:
        config_file = Path(config_file)
        if not config_file.is_file():
            raise ConfigError(f"config file {config_file} does not exist")
    unknown = _unknown_env_keys()
    if unknown:
        raise ConfigError(f"unknown environment setting {', '.join(sorted(unknown))} (typo?)")
    _TOML_FILE["path"] = config_file
    try:
        return Settings(**overrides)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None
    except ValueError as err:  # malformed TOML or a bad env value pydantic-settings cannot parse
        raise ConfigError(redact(f"cannot read settings: {err}")) from None
    finally:
        _TOML_FILE["path"] = None
