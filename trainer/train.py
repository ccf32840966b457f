"""Training: GAN phase, PGD adversarial phase, per-epoch robustness curves, calibration, export, registry.

Pipeline of ``forensics train --data DIR``:

1. read DFDC-format labels, split train/val/test by original clip, cache face crops;
2. GAN phase: the discriminator D learns REAL crops (0) against FAKE crops (1) and samples of a
   DCGAN generator G (1, weighted), G learns to fool D (Adam 2e-4, betas 0.5/0.999);
3. adversarial phase: every batch is half clean, half PGD (or FGSM-RS) examples made against the
   current D, with the L-inf radius raised stepwise over epochs (a curriculum);
4. after every epoch, on the validation split: clean AUC and log loss, PGD success rate, and the
   Mahalanobis detector's detection rate on those adversarial examples at 5% false positives;
5. fit the Mahalanobis scorer on clean train features, its layer weights and threshold on
   validation data; calibrate the decision thresholds on validation data;
6. evaluate the final model and the undefended (end of GAN phase) model on the held-out test split;
7. export to ONNX with a parity check, write scorer.npz, report/metrics.json and the manifest.

Runs single-process or under ``torchrun`` (DistributedDataParallel; gloo on CPU, nccl on GPU).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from forensics.logs import get_logger
from forensics.registry import Registry
from forensics.scoring import MahalanobisScorer, calibrate_threshold, fit_layer_weights, fit_mahalanobis
from trainer import attacks
from trainer.data import (
    CropCache,
    CropConfig,
    CropSet,
    DatasetError,
    as_float_tensor,
    torch_dataset,
    training_transform,
)
from trainer.defence import SHIPPED as SHIPPED_DEFENCE
from trainer.defence import fit_defences
from trainer.models import (
    Discriminator,
    LogitsOnly,
    WithChannelStats,
    build_detector,
    build_generator,
    detector_config,
    warm_up_spectral_norm,
)
from trainer.sbi import self_blended_dataset
from trainer.sources import load_run_data
from trainer.ood import ood_sets, scorer_fit_positives

EPS_REPORT = (1 / 255, 2 / 255, 4 / 255, 8 / 255)


@dataclass
class TrainConfig:
    data: list[str]
    image_size: int = 64
    frames_per_video: int = 16
    gan_epochs: int = 14
    adv_epochs: int = 5
    batch_size: int = 64
    lr: float = 2e-4
    adv_lr: float = 1e-4
    gen_weight: float = 0.1  # weight of generator samples among D's fakes
    adv_mode: str = "pgd"  # pgd | fgsm (FGSM with random start: cheaper on CPU)
    eps: float = 6 / 255  # final radius of the adversarial curriculum
    eps_steps: int = 3  # the radius rises in this many steps over the adversarial epochs
    pgd_train_steps: int = 5
    eval_eps: float = 4 / 255
    eval_pgd_steps: int = 10
    eval_subset: int = 256  # validation crops attacked per epoch
    val_share: float = 0.15
    test_share: float = 0.2
    anomaly_fpr: float = 0.05
    seed: int = 0
    device: str = "cpu"
    workers: int = 2  # crop extraction processes
    threads: int = 0  # torch intra-op threads; 0: torch's default
    progress: bool = True
    resume: bool = False
    promote: bool = False  # promote when done (the first model is always promoted)
    evaluate: bool = True  # quick robustness evaluation + report.html in report/eval/ (hashed in the manifest)
    run_dir: str = ".forensics/train"
    cache_dir: str = ".forensics/crops"
    models_dir: str = "models"
    parent: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    arch: str = "dcgan"  # dcgan (spectral-norm discriminator) | resnet (trainer/backbones.py)
    fakes: str = "labelled"  # labelled | self-blended | both (trainer/sources.py)
    real_only: list[str] = field(default_factory=list)  # folders of real footage (every video REAL)
    augment: str = "basic"  # basic (flip, affine) | strong (+ compression, resize, colour, cut-out)
    train_frames: int = 0  # use at most this many crops per training video (0: all cached)
    crop_size: int | None = None  # size of the cached crops (default image_size); larger caches serve smaller models


# ---- distributed helpers -------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.on:
            torch.distributed.barrier()


def init_distributed(device: str) -> Dist:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    backend = "nccl" if device == "cuda" else "gloo"
    torch.distributed.init_process_group(backend=backend)
    return Dist(torch.distributed.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# ---- metrics -----------------------------------------------------------------------------


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def balanced_threshold(probs: np.ndarray, labels: np.ndarray) -> float:
    """The probability threshold with the best balanced accuracy (Youden's J) on these labels."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(labels, probs)
    j = tpr - fpr
    best = int(np.argmax(j))
    t = float(thr[best])
    return min(max(t, 1e-6), 1 - 1e-6)


def video_scores(probs: np.ndarray, video: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-video mean fake probability and label (the aggregation the detect worker uses)."""
    ids = np.unique(video)
    return (
        np.array([probs[video == i].mean() for i in ids]),
        np.array([labels[video == i][0] for i in ids]),
    )


def _logit(p: float) -> float:
    return float(math.log(p / (1 - p)))


# ---- model helpers -------------------------------------------------------------------------


@torch.no_grad()
def predict(model: Discriminator, x: torch.Tensor, batch: int = 256) -> tuple[np.ndarray, list[np.ndarray]]:
    """Logits [N] and per-layer features [N, C_l] (float64 numpy) in eval mode."""
    was = model.training
    model.eval()
    logits, feats = [], []
    for b in x.split(batch):
        lo, fe = model(b)
        logits.append(lo)
        feats.append(fe)
    model.train(was)
    out_feats = [torch.cat([f[i] for f in feats]).double().numpy() for i in range(len(feats[0]))] if feats else []
    return torch.cat(logits).double().numpy() if logits else np.zeros(0), out_feats


def attack_batch(model: Discriminator, x: torch.Tensor, y: torch.Tensor, eps: float, mode: str, steps: int,
                 gen: torch.Generator) -> torch.Tensor:  # fmt: skip
    """Adversarial examples for training: FGSM with random start, or PGD with ``steps`` steps."""
    if mode == "fgsm":
        return attacks.fgsm(LogitsOnly(model), x, y, eps, random_start=True, generator=gen)
    return attacks.pgd(LogitsOnly(model), x, y, eps, steps=steps, random_start=True, generator=gen)


# ---- the trainer ------------------------------------------------------------------------


class Trainer:
    def __init__(self, cfg: TrainConfig, dist: Dist | None = None):
        self.cfg = cfg
        self.dist = dist or Dist()
        self.log = get_logger(rank=self.dist.rank) if self.dist.on else get_logger()
        self.device = torch.device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.gen = seed_everything(cfg.seed + self.dist.rank)
        self.run_dir = Path(cfg.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.history: list[dict[str, Any]] = []
        self.timings: dict[str, float] = {}

    # -- data -------------------------------------------------------------------------------
    def load_data(self) -> None:
        cfg = self.cfg
        t0 = time.monotonic()
        self.crop_cfg = CropConfig(size=cfg.crop_size or cfg.image_size, frames_per_video=cfg.frames_per_video)
        cache = CropCache(cfg.cache_dir, self.crop_cfg)
        if self.dist.on:
            if self.dist.main:
                cache.build(load_run_data(cfg, cache, videos_only=True), workers=cfg.workers, progress=cfg.progress)
            self.dist.barrier()  # crops are extracted once, on rank 0
        run_data = load_run_data(cfg, cache, build=not self.dist.on)
        self.failed_videos = run_data.failed
        self.provenance = run_data.provenance
        self.crops: dict[str, CropSet] = run_data.crops
        if self.failed_videos:
            self.log.warning("videos skipped", **self.provenance["skipped_videos"])
        self.fingerprint = self.crops["train"].fingerprint()
        self.timings["data_s"] = time.monotonic() - t0
        self.log.info(
            "data split",
            **{f"{k}_videos": len(v.videos) for k, v in self.crops.items()},
            **{f"{k}_crops": len(v) for k, v in self.crops.items()},
            failed_videos=len(self.failed_videos),
        )
        cs = self.crops["val"]
        # A fixed, class-balanced subset of validation crops for the per-epoch attack curves.
        rng = np.random.default_rng(self.cfg.seed)
        idx = rng.permutation(len(cs))[: self.cfg.eval_subset]
        self.val_x = as_float_tensor(cs.images)
        self.val_y = cs.labels.astype(np.float64)
        self.val_sub = torch.from_numpy(np.sort(idx))

    def _loader(self):
        from torch.utils.data import DataLoader, DistributedSampler

        cfg = self.cfg
        transform = training_transform(cfg.image_size, strong=cfg.augment == "strong")
        if self.provenance["fakes"] in ("self-blended", "both"):
            ds = self_blended_dataset(self.crops["train"], transform, cfg.seed, labelled=self.provenance["fakes"] == "both")
            if ds.stats.blended == 0:
                raise DatasetError("self-blended fakes need face landmarks and no train crop has any: "
                                   "see README, 'Training for real video'")  # fmt: skip
        else:
            ds = torch_dataset(self.crops["train"], transform)
        self.train_dataset = ds
        sampler = DistributedSampler(ds, self.dist.world, self.dist.rank, seed=self.cfg.seed) if self.dist.on else None
        return DataLoader(
            ds,
            batch_size=self.cfg.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            drop_last=True,
            generator=self.gen if sampler is None else None,
            num_workers=0,
        )

    # -- models -----------------------------------------------------------------------------
    def build_models(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.D = build_detector(cfg.arch, cfg.image_size).to(self.device)
        self.G = build_generator(cfg.image_size).to(self.device)
        if cfg.arch == "dcgan":
            self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        else:  # a classifier with BatchNorm: the usual AdamW, not the GAN betas
            self.opt_d = torch.optim.AdamW(self.D.parameters(), lr=cfg.lr, weight_decay=1e-4)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        self.D_train: nn.Module = self.D
        self.G_train: nn.Module = self.G
        if self.dist.on:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.D_train = DDP(self.D)
            self.G_train = DDP(self.G)
        self.epoch = 0
        self.standard_state: dict[str, torch.Tensor] | None = None

    # -- checkpoints ----------------------------------------------------------------------
    def _ckpt_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        if not self.dist.main:
            return
        state = {
            "epoch": self.epoch,
            "D": self.D.state_dict(),
            "G": self.G.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "standard": self.standard_state,
            "history": self.history,
            "fingerprint": self.fingerprint,
            "config": asdict(self.cfg),
            "rng": {"torch": torch.get_rng_state(), "gen": self.gen.get_state(), "np": np.random.get_state()[1].tolist()},
        }
        tmp = self._ckpt_path().with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self._ckpt_path())

    def maybe_resume(self) -> None:
        path = self._ckpt_path()
        if not (self.cfg.resume and path.exists()):
            return
        # Our own checkpoint, written by this trainer: tensors and plain containers only.
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state["fingerprint"] != self.fingerprint:
            self.log.warning("checkpoint is for other data; starting afresh", path=str(path))
            return
        self.D.load_state_dict(state["D"])
        self.G.load_state_dict(state["G"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.standard_state = state["standard"]
        self.history = state["history"]
        self.epoch = state["epoch"]
        torch.set_rng_state(state["rng"]["torch"])
        self.gen.set_state(state["rng"]["gen"])
        self.log.info("resumed", epoch=self.epoch)

    # -- training loops --------------------------------------------------------------------
    def eps_for(self, adv_epoch: int) -> float:
        """Curriculum: the radius climbs to cfg.eps in cfg.eps_steps equal steps."""
        steps = max(1, min(self.cfg.eps_steps, self.cfg.adv_epochs))
        per = max(1, math.ceil(self.cfg.adv_epochs / steps))
        level = min(steps, adv_epoch // per + 1)
        return self.cfg.eps * level / steps

    def train_epoch(self, loader, phase: str, eps: float) -> dict[str, float]:
        cfg = self.cfg
        D, G = self.D_train, self.G_train
        D.train()
        G.train()
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(self.epoch)
        if hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(self.epoch)  # fresh self-blended fakes every epoch
        use_gen = cfg.gen_weight > 0
        bce = nn.BCEWithLogitsLoss(reduction="none")
        sums = {"d_loss": 0.0, "g_loss": 0.0, "n": 0}
        bar = _bar(len(loader), f"epoch {self.epoch + 1} {phase}", cfg.progress and self.dist.main, unit="batch")
        for x, y in loader:
            x, y = x.to(self.device), y.to(self.device)
            n = x.shape[0]
            weights = torch.ones(n, device=self.device)
            if phase == "gan" and not use_gen:  # clean epochs without generator samples
                xs, ys = x, y
            elif phase == "gan":
                z = torch.randn(max(1, n // 8), self.G.latent_dim,
                                device=self.device)  # fmt: skip
                with torch.no_grad():
                    fake_gen = G(z)
                xs = torch.cat([x, fake_gen])
                ys = torch.cat([y, torch.ones(len(fake_gen), device=self.device)])
                weights = torch.cat([weights, torch.full((len(fake_gen),), cfg.gen_weight, device=self.device)])
            else:
                # Half the batch clean, half adversarial, made against the current D.
                half = n // 2
                x_adv = attack_batch(self.D, x[half:], y[half:], eps, cfg.adv_mode, cfg.pgd_train_steps, self.gen)
                xs = torch.cat([x[:half], x_adv])
                ys = y
            logits, _ = D(xs)
            d_loss = (bce(logits, ys) * weights).sum() / weights.sum()
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            sums["d_loss"] += d_loss.item() * n
            if phase == "gan" and use_gen:
                z = torch.randn(n // 2, self.G.latent_dim, device=self.device)
                g_logits, _ = D(G(z))
                g_loss = bce(g_logits, torch.zeros_like(g_logits)).mean()  # G wants "real" (0)
                self.opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                self.opt_g.step()
                self.opt_d.zero_grad(set_to_none=True)  # G's step also filled D's grads
                sums["g_loss"] += g_loss.item() * n
            sums["n"] += n
            bar.update(1)
            bar.set_postfix(d=f"{d_loss.item():.3f}")
        bar.close()
        return {k: v / max(1, sums["n"]) for k, v in sums.items() if k != "n"}

    # -- validation ----------------------------------------------------------------------
    def fit_scorer(self, model: Discriminator, *, limit: int = 2048) -> MahalanobisScorer:
        """Class-conditional Gaussian fit on clean train features (a subsample for speed)."""
        cs = self.crops["train"]
        rng = np.random.default_rng(self.cfg.seed)
        idx = np.sort(rng.permutation(len(cs))[:limit])
        _, feats = predict(model, as_float_tensor(cs.images[idx]))
        return fit_mahalanobis(feats, cs.labels[idx])

    def validate(self, model: Discriminator, eps: float) -> dict[str, float]:
        cfg = self.cfg
        logits, feats = predict(model, self.val_x)
        probs = 1 / (1 + np.exp(-logits))
        row = {"clean_auc": roc_auc(probs, self.val_y), "log_loss": log_loss(probs, self.val_y)}
        thr = balanced_threshold(probs, self.val_y)
        row["threshold"] = thr
        scorer = self.fit_scorer(model)
        combined = scorer.score(feats)
        cut = calibrate_threshold(combined, fpr=cfg.anomaly_fpr)
        # PGD against the fixed subset's fakes that the model detects at the calibrated threshold.
        sub = self.val_sub.numpy()
        fakes = sub[(self.val_y[sub] == 1) & (probs[sub] > thr)]
        row["attacked"] = int(len(fakes))
        if len(fakes):
            x = self.val_x[fakes]
            y = torch.ones(len(fakes))
            x_adv = attacks.pgd(LogitsOnly(model), x, y, cfg.eval_eps, steps=cfg.eval_pgd_steps, generator=self.gen)
            adv_logits, adv_feats = predict(model, x_adv)
            fooled = adv_logits <= _logit(thr)
            row["pgd_success"] = float(fooled.mean())
            adv_scores = scorer.score(adv_feats)
            row["anomaly_detection_rate"] = float((adv_scores > cut).mean())
            row["anomaly_detection_rate_fooling"] = float((adv_scores[fooled] > cut).mean()) if fooled.any() else float("nan")
        row["anomaly_fpr_val"] = float((combined > cut).mean())
        return row

    # -- whole run ------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        t_start = time.monotonic()
        self.load_data()
        self.build_models()
        self.maybe_resume()
        loader = self._loader()
        cfg = self.cfg
        total = cfg.gan_epochs + cfg.adv_epochs
        t0 = time.monotonic()
        while self.epoch < total:
            phase = "gan" if self.epoch < cfg.gan_epochs else "adv"
            if phase == "adv" and self.standard_state is None:
                self.standard_state = {k: v.clone() for k, v in self.D.state_dict().items()}
                for group in self.opt_d.param_groups:
                    group["lr"] = cfg.adv_lr
            eps = self.eps_for(self.epoch - cfg.gan_epochs) if phase == "adv" else 0.0
            te = time.monotonic()
            losses = self.train_epoch(loader, phase, eps)
            train_s = time.monotonic() - te
            row = {"epoch": self.epoch + 1, "phase": phase, "train_eps": eps, **losses, "train_s": train_s}
            if self.dist.main:
                row.update(self.validate(self.D, eps))
                self.log.info("epoch done", **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
            self.history.append(row)
            self.epoch += 1
            self.save_checkpoint()
            self.dist.barrier()
        if self.standard_state is None:  # no adversarial phase: the model is its own baseline
            self.standard_state = {k: v.clone() for k, v in self.D.state_dict().items()}
        self.timings["train_s"] = time.monotonic() - t0
        result: dict[str, Any] = {}
        if self.dist.main:
            result = self.finish()
        self.timings["total_s"] = time.monotonic() - t_start
        self.dist.barrier()
        return result

    # -- after training ----------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.monotonic()
        D = self.D.eval()
        standard = build_detector(cfg.arch, cfg.image_size)
        standard.load_state_dict(self.standard_state)
        warm_up_spectral_norm(standard, iters=5)
        standard.eval()

        # Decision thresholds, on validation data only.
        val = self.crops["val"]
        logits_val, feats_val = predict(D, self.val_x)
        probs_val = 1 / (1 + np.exp(-logits_val))
        frame_thr = balanced_threshold(probs_val, self.val_y)
        vp, vl = video_scores(probs_val, val.video, val.labels)
        video_thr = balanced_threshold(vp, vl)

        # Mahalanobis scorer: Gaussians on clean train features; layer weights and threshold on validation.
        scorer = self.fit_scorer(D)
        negatives = scorer.layer_scores(feats_val)
        pos_imgs = scorer_fit_positives(val.images, seed=cfg.seed + 1)
        _, feats_pos = predict(D, as_float_tensor(pos_imgs))
        val_adv = attack_batch(D, self.val_x[self.val_sub], torch.from_numpy(self.val_y[self.val_sub.numpy()]).float(),
                               8 / 255, "fgsm", 1, self.gen)  # fmt: skip
        _, feats_adv = predict(D, val_adv)
        positives = np.concatenate([scorer.layer_scores(feats_pos), scorer.layer_scores(feats_adv)])
        weights, bias = fit_layer_weights(negatives, positives)
        scorer = scorer.with_layer_weights(weights, bias)
        anomaly_thr = calibrate_threshold(scorer.score(feats_val), fpr=cfg.anomaly_fpr)
        scorer = scorer.with_threshold(anomaly_thr, fpr=cfg.anomaly_fpr)
        # The worker's second line of defence (issue 8, defence.npz): train and validation crops only.
        self.defences = fit_defences(D, scorer, self.crops["train"], val, fpr=cfg.anomaly_fpr, seed=cfg.seed)
        shipped = self.defences[SHIPPED_DEFENCE]

        # Held-out test split: both models, same data.
        test = self.crops["test"]
        x_test = as_float_tensor(test.images)
        y_test = test.labels.astype(np.float64)
        metrics: dict[str, Any] = {
            "adversarially_trained": self.evaluate(D, x_test, y_test, test, frame_thr, video_thr, scorer),
        }
        std_thr = balanced_threshold(1 / (1 + np.exp(-predict(standard, self.val_x)[0])), self.val_y)
        metrics["standard"] = self.evaluate(standard, x_test, y_test, test, std_thr, None, None)
        metrics["standard"]["frame_threshold"] = std_thr
        adv_m, std_m = metrics["adversarially_trained"], metrics["standard"]
        metrics["clean_auc_drop"] = std_m["clean_frame_auc"] - adv_m["clean_frame_auc"]

        # Out-of-distribution crops (kinds never used for fitting) against the scorer.
        ood = ood_sets(test.images, n=min(200, len(test)), seed=cfg.seed + 2)
        _, feats_test = predict(D, x_test)
        clean_flag = scorer.score(feats_test) > anomaly_thr
        ood_rates = {}
        for name, imgs in ood.items():
            _, f = predict(D, as_float_tensor(imgs))
            ood_rates[name] = float((scorer.score(f) > anomaly_thr).mean())
        metrics["ood_detection"] = {**ood_rates, "all": float(np.mean(list(ood_rates.values()))),
                                    "clean_test_fpr": float(clean_flag.mean())}  # fmt: skip

        thresholds = {"frame_prob": frame_thr, "video_prob": video_thr, "anomaly": anomaly_thr,
                      "anomaly_fpr": cfg.anomaly_fpr, "defence_crop": shipped.threshold,
                      "defence_track": shipped.track_threshold}  # fmt: skip
        self.timings["finish_s"] = time.monotonic() - t0
        return self.register(D, scorer, metrics, thresholds)

    def evaluate(self, model, x, y, crops: CropSet, frame_thr: float, video_thr: float | None,
                 scorer: MahalanobisScorer | None) -> dict[str, Any]:  # fmt: skip
        cfg = self.cfg
        logits, _ = predict(model, x)
        probs = 1 / (1 + np.exp(-logits))
        vp, vl = video_scores(probs, crops.video, crops.labels)
        out: dict[str, Any] = {
            "clean_frame_auc": roc_auc(probs, y),
            "clean_video_auc": roc_auc(vp, vl),
            "log_loss": log_loss(probs, y),
            "frame_accuracy": float(((probs > frame_thr) == (y == 1)).mean()),
            "frames": int(len(y)),
            "videos": int(len(vl)),
        }
        if video_thr is not None:
            out["video_accuracy"] = float(((vp > video_thr) == (vl == 1)).mean())
        fakes = np.where((y == 1) & (probs > frame_thr))[0]
        # A fixed subset: PGD at four radii on every detected fake is hours on a CPU for real-video test sets.
        fakes = np.sort(np.random.default_rng(cfg.seed).permutation(fakes)[: cfg.eval_subset])
        out["pgd"] = {}
        for eps in EPS_REPORT:
            if not len(fakes):
                break
            xa = attacks.pgd(LogitsOnly(model), x[fakes], torch.ones(len(fakes)), eps, steps=cfg.eval_pgd_steps,
                             generator=torch.Generator().manual_seed(cfg.seed))  # fmt: skip
            la, fa = predict(model, xa)
            fooled = la <= _logit(frame_thr)
            out["pgd"][f"{round(eps * 255)}/255"] = {"success_rate": float(fooled.mean()), "attacked": int(len(fakes))}
            if scorer is not None and abs(eps - cfg.eval_eps) < 1e-9:
                s = scorer.score(fa)
                out["anomaly_on_pgd"] = {
                    "eps": f"{round(eps * 255)}/255",
                    "detection_rate_all": float((s > scorer.threshold).mean()),
                    "detection_rate_fooling": float((s[fooled] > scorer.threshold).mean()) if fooled.any() else None,
                    "fooling_examples": int(fooled.sum()),
                }
        return out

    def register(self, D: Discriminator, scorer: MahalanobisScorer, metrics: dict, thresholds: dict) -> dict[str, Any]:
        cfg = self.cfg
        reg = Registry(cfg.models_dir)
        version, vdir = reg.new_version()
        sample = self.val_x[: min(64, len(self.val_x))]
        parity = export_onnx(D, vdir / "model.onnx", sample)
        scorer.save(vdir / "scorer.npz")
        self.defences[SHIPPED_DEFENCE].save(vdir / "defence.npz")
        # torch weights for white-box evaluation and saliency (trainer only; workers use the ONNX model).
        torch.save({"state_dict": D.state_dict(), **detector_config(D)}, vdir / "discriminator.pt")
        # The generator, for the report's sample-fidelity (SSIM) figures.
        torch.save({"state_dict": self.G.state_dict(), "image_size": cfg.image_size, "latent_dim": self.G.latent_dim},
                   vdir / "generator.pt")  # fmt: skip
        (vdir / "report").mkdir(exist_ok=True)
        report = {
            "version": version,
            "history": self.history,
            "test": metrics,
            "thresholds": thresholds,
            "parity": parity,
            "data": {
                "roots": [str(p) for p in cfg.data],
                "fingerprint": self.fingerprint,
                **{f"{k}_videos": len(v.videos) for k, v in self.crops.items()},
                **{f"{k}_crops": len(v) for k, v in self.crops.items()},
                "failed_videos": self.failed_videos,
                "provenance": self.provenance,
            },
            "config": asdict(cfg),
            "timings": self.timings,
            "world_size": self.dist.world,
        }
        (vdir / "report" / "metrics.json").write_text(json.dumps(_jsonable(report), indent=1))
        if cfg.evaluate:
            self.write_eval_report(version, vdir, D, scorer, thresholds)
        adv = metrics["adversarially_trained"]
        manifest = reg.write_manifest(
            version,
            {
                "input_size": cfg.image_size,
                "architecture": cfg.arch,
                "provenance": self.provenance,
                "preprocessing": {
                    "input": "float32 [N,3,S,S] RGB in [0,1]",
                    "normalization": "inside the model: (x - 0.5) / 0.5",
                    "crop": {"detector": self.crop_cfg.detector, "margin": self.crop_cfg.margin, "square": True},
                },
                "outputs": WithChannelStats(D).output_names(),
                "feature_dims": list(D.feature_dims),
                "data_fingerprint": self.fingerprint,
                "metrics": _jsonable({
                    "clean_frame_auc": adv["clean_frame_auc"],
                    "clean_video_auc": adv["clean_video_auc"],
                    "pgd_success": {k: v["success_rate"] for k, v in adv["pgd"].items()},
                    "ood_detection": metrics["ood_detection"]["all"],
                }),
                "thresholds": thresholds,
                "parent": cfg.parent if cfg.parent is not None else reg.current(),
                "onnx": {"external_data": False, "opset": parity.get("opset")},
                "torch_weights": "discriminator.pt",
                "generator_weights": "generator.pt",
            },
        )
        promoted = False
        if cfg.promote or reg.current() is None:
            reg.promote(version, reason="first model" if reg.current() is None else "--promote")
            promoted = True
        self.log.info("model registered", version=version, promoted=promoted, path=str(vdir))
        return {"version": version, "path": str(vdir), "promoted": promoted, "manifest": manifest,
                "metrics": report["test"], "thresholds": thresholds}  # fmt: skip


    def write_eval_report(self, version: str, vdir: Path, D: Discriminator, scorer: MahalanobisScorer,
                          thresholds: dict) -> None:  # fmt: skip
        """The evaluation protocol of `forensics eval` in quick mode, before the manifest is written."""
        from forensics.runtime import OnnxDiscriminator  # noqa: PLC0415
        from trainer.evaluate import run_evaluation  # noqa: PLC0415
        from trainer.report import write_report  # noqa: PLC0415

        t0 = time.monotonic()
        onnx = OnnxDiscriminator(vdir / "model.onnx", intra_op_threads=1)
        result = run_evaluation(D, lambda xs: onnx.run_float(xs).logits, scorer, thresholds, self.crops["test"],
                                seed=self.cfg.seed, quick=True, generator=self.G.eval(),
                                defences=self.defences, shipped_defence=SHIPPED_DEFENCE)  # fmt: skip
        result["version"] = version
        write_report(result, self.history, vdir / "report" / "eval")
        self.timings["eval_s"] = time.monotonic() - t0


def export_onnx(D: Discriminator, path: Path, sample: torch.Tensor) -> dict:
    from trainer.export import export_discriminator

    return export_discriminator(D, path, sample)


def _bar(total: int, desc: str, enabled: bool, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, unit=unit, dynamic_ncols=True)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run a whole training; on rank 0 returns the registered version's summary."""
    dist = init_distributed(cfg.device)
    try:
        return Trainer(cfg, dist).run()
    finally:
        if dist.on:
            torch.distributed.destroy_process_group()
