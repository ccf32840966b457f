"""The training recipe: every knob of a run and its default, in one place.

``forensics train`` and ``forensics demo`` take their defaults from :class:`TrainConfig`; retraining
(trainer/retrain.py) starts from the current model's recorded config. No torch here, so the CLI
can read the defaults without the ``train`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# L-inf radii (of [0,1] pixels) of the PGD success rates in a model's test metrics and reports.
EPS_REPORT = (1 / 255, 2 / 255, 4 / 255, 8 / 255)


AUGMENTS = ("flip", "basic", "strong")  # TrainConfig.augment (trainer.data.training_transform)


@dataclass
class TrainConfig:
    data: list[str]
    image_size: int = 64
    frames_per_video: int = 16
    gan_epochs: int = 14
    # 10 fgsm-rs epochs cost what 5 PGD-5 epochs did (README "Measured: objectives at equal time, 240 clips")
    adv_epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-4
    adv_lr: float = 1e-4
    gen_weight: float = 0.1  # weight of generator samples among D's fakes
    adv_mode: str = "pgd"  # legacy: "fgsm" means adv_objective "fgsm-rs"
    # pgd | trades | mart | fgsm-rs (trainer/adversarial.py). fgsm-rs: at equal compute on the demo recipe it
    # left PGD-10 4/255 at 38 / 37 % where pgd left 52 / 44 % (two data seeds), same clean AUC (README)
    adv_objective: str = "fgsm-rs"
    adv_mix: float = 0.5  # share of each batch replaced by adversarial examples (pgd, fgsm-rs)
    adv_beta: float = 6.0  # weight of the KL term (trades, mart)
    grad_align: float = 0.0  # GradAlign weight (fgsm-rs; 0: off)
    adv_time_s: float = 0.0  # adversarial phase's training time budget in seconds (0: adv_epochs decides)
    adv_clock: str = "wall"  # wall | cpu (this process's CPU seconds: equal compute on a shared machine)
    eps: float = 6 / 255  # final radius of the adversarial curriculum
    eps_schedule: str = "steps"  # steps | ramp | constant
    eps_steps: int = 3  # steps: the radius rises in this many steps over the adversarial phase
    eps_ramp: float = 0.5  # ramp: share of the phase over which the radius rises linearly to eps
    pgd_train_steps: int = 5
    eval_eps: float = 4 / 255
    eval_pgd_steps: int = 10
    eval_subset: int = 256  # validation crops attacked per epoch
    # The per-epoch curve fits the shipped defence on every adversarial epoch and on every k-th clean epoch
    # and the last one (a fit costs about one clean epoch; issue 17, README "Adversarial training"); 1: every epoch.
    val_defence_every: int = 3
    val_share: float = 0.15
    test_share: float = 0.2
    anomaly_fpr: float = 0.05
    # The second line that ships in defence.npz: a name of trainer.defence.CANDIDATES. One squeezer
    # (issue 17: ~2x the bare model per face; "channel+squeeze" is issue 8's four, ~5x).
    defence: str = "channel+median3"
    seed: int = 0
    device: str = "cpu"
    workers: int = 2  # crop extraction processes
    threads: int = 0  # torch intra-op threads; 0: torch's default
    progress: bool = True
    resume: bool = False
    promote: bool = False  # promote when done (the first model is always promoted)
    evaluate: bool = True  # quick robustness evaluation + report.html in report/eval/ (hashed in the manifest)
    # Budgets of that evaluation over trainer.registration.TRAIN_REPORT's (keys of run_evaluation:
    # square_images, square_queries, adaptive_frames, blackbox_images, ...); the tests' model uses small ones.
    report_budget: dict[str, int] = field(default_factory=dict)
    run_dir: str = ".forensics/train"
    cache_dir: str = ".forensics/crops"
    models_dir: str = "models"
    parent: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    arch: str = "dcgan"  # dcgan (spectral-norm discriminator) | resnet (trainer/backbones.py)
    width: int = 0  # detector's first-stage channels, doubling per stage (0: the arch's default: 32 dcgan, 16 resnet)
    fakes: str = "labelled"  # labelled | self-blended | both (trainer/sources.py)
    real_only: list[str] = field(default_factory=list)  # folders of real footage (every video REAL)
    # flip (mirror only) | basic (flip, affine) | strong (+ compression, resize, colour, cut-out). The affine step
    # resamples, and so blurs, every crop; the synthetic swaps' main trace is a blurred inner face. On the demo
    # recipe (240 clips, 5 PGD epochs) flip kept the clean video AUC of standard training (0.91 vs 0.92) where
    # basic lost 10 points (0.80), and PGD-10 at 4/255 fooled 43% of detected fakes instead of 75% (README,
    # "Adversarial training"). Real video: the README's recipe is strong.
    augment: str = "flip"
    train_frames: int = 0  # use at most this many crops per training video (0: all cached)
    crop_size: int | None = None  # size of the cached crops (default image_size); larger caches serve smaller models
    crop_detector: str = "blazeface"  # face detector of the crop cache: serve with the same faces.detector
    test_data: list[str] = field(default_factory=list)  # test on these parts (e.g. another dataset); data splits train/val only
    max_minutes: float = 0  # wall-time cap of a run, checked at epoch boundaries (trainer/timecap.py; 0: no cap)


