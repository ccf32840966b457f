"""Training: GAN phase, adversarial phase (trainer/adversarial.py), per-epoch robustness curves, calibration, export, registry.

Pipeline of ``forensics train --data DIR``:

1. read DFDC-format labels, split train/val/test by original clip, cache face crops;
2. GAN phase: the discriminator D learns REAL crops (0) against FAKE crops (1) and samples of a
   DCGAN generator G (1, weighted), G learns to fool D (Adam 2e-4, betas 0.5/0.999);
3. adversarial phase: the objective of ``adv_objective`` (PGD-AT, TRADES, MART or FGSM-RS, see
   trainer/adversarial.py) on examples made against the current D, with the L-inf radius raised
   over the phase (``eps_schedule``) and, optionally, a wall-clock budget (``adv_time_s``);
4. after every epoch, on the validation split: clean AUC and log loss, PGD success rate, and the
   shipped defence's detection rate on those adversarial examples and its clean false-positive rate
   (fitted on the epoch's model as after training), the pooled Mahalanobis scorer's beside them;
5. fit the Mahalanobis scorer on clean train features, its layer weights and threshold on
   validation data; calibrate the decision thresholds on validation data;
6. evaluate the final model and the undefended (end of GAN phase) model on the held-out test split,
   and the out-of-distribution sets flagged by the shipped defence or gated (quality gate + face check);
7. export to ONNX with a parity check, write scorer.npz, report/metrics.json and the manifest.

Runs single-process or under ``torchrun`` (DistributedDataParallel; gloo on CPU, nccl on GPU).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from forensics.errors import ConfigError
from forensics.logs import get_logger
from forensics.quality import face_check_detector, face_checker
from forensics.scoring import calibrate_threshold
from trainer import attacks
from trainer.adversarial import AdversarialPhase, eps_at
from trainer.calibration import calibrated_scorer, decision_thresholds, fit_scorer
from trainer.data import (
    CropCache,
    CropConfig,
    CropSet,
    DatasetError,
    as_float_tensor,
    torch_dataset,
    training_transform,
)
from trainer.defence import CANDIDATES as DEFENCE_CANDIDATES
from trainer.defence import clean_rates, crop_features, fit_defences, to_uint8
from trainer.distributed import Dist, init_distributed, seed_everything
from trainer.heldout import heldout_metrics
from trainer.metrics import balanced_threshold, log_loss, logit, predict, roc_auc, sigmoid
from trainer.models import (
    Discriminator,
    LogitsOnly,
    WithChannelStats,
    build_detector,
    build_generator,
    warm_up_spectral_norm,
)
from trainer.ood import gated_rates, ood_flagged_or_gated, ood_sets
from trainer.recipe import AUGMENTS, TrainConfig
from trainer.registration import register
from trainer.sbi import self_blended_dataset
from trainer.sources import load_run_data
from trainer.timecap import TimeCap, adversarial_cost

__all__ = ["Dist", "TrainConfig", "Trainer", "train"]


# ---- the trainer ------------------------------------------------------------------------


class Trainer:
    def __init__(self, cfg: TrainConfig, dist: Dist | None = None):
        if cfg.defence not in DEFENCE_CANDIDATES:
            raise ConfigError(f"unknown defence {cfg.defence!r}: choose one of {'; '.join(DEFENCE_CANDIDATES)}")
        if cfg.augment not in AUGMENTS:
            raise ConfigError(f"unknown augment {cfg.augment!r}: choose one of {', '.join(AUGMENTS)}")
        if cfg.width < 0 or (cfg.width and cfg.width % 2):
            raise ConfigError(f"width must be 0 (the architecture's default) or a positive even number, got {cfg.width}")
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
        self.crop_cfg = CropConfig(size=cfg.crop_size or cfg.image_size, frames_per_video=cfg.frames_per_video,
                                   detector=cfg.crop_detector)  # fmt: skip
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
        transform = training_transform(cfg.image_size, strong=cfg.augment == "strong", affine=cfg.augment != "flip")
        if self.provenance["fakes"] in ("self-blended", "both"):
            ds = self_blended_dataset(self.crops["train"], transform, cfg.seed, labelled=self.provenance["fakes"] == "both")
            if ds.stats.blended == 0:
                raise DatasetError("self-blended fakes need face landmarks and no train crop has any: "
                                   "see README, 'Training for real video'")  # fmt: skip
        else:
            ds = torch_dataset(self.crops["train"], transform)
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
        self.D = build_detector(cfg.arch, cfg.image_size, cfg.width).to(self.device)
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
        self.gan_epochs = cfg.gan_epochs  # clean epochs; fewer when --max-minutes cuts the clean phase
        self.standard_state: dict[str, torch.Tensor] | None = None

    # -- checkpoints ----------------------------------------------------------------------
    def _ckpt_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        if not self.dist.main:
            return
        state = {
            "epoch": self.epoch,
            "gan_epochs": self.gan_epochs,
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
        # A clean phase that --max-minutes ended stays ended once the PGD phase has begun; otherwise the
        # resumed run's own gan_epochs holds (a resume may ask for more clean epochs).
        saved = state.get("gan_epochs")
        self.gan_epochs = saved if saved is not None and self.epoch > saved else self.cfg.gan_epochs
        torch.set_rng_state(state["rng"]["torch"])
        self.gen.set_state(state["rng"]["gen"])
        self.log.info("resumed", epoch=self.epoch)

    # -- training loops --------------------------------------------------------------------
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
            if phase == "adv" and self.adv.done:
                break  # the adversarial phase's time budget is spent
            tb = self.adv.clock()
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
            if phase == "adv":  # the objective's loss on adversarial examples made against the current D
                d_loss = self.adv.loss(D, self.D, x, y, self.gen)
            else:
                logits, _ = D(xs)
                d_loss = (bce(logits, ys) * weights).sum() / weights.sum()
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            if phase == "adv":
                self.adv.count(self.adv.clock() - tb)
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
    def validate(self, model: Discriminator, eps: float) -> dict[str, float]:
        """The epoch's row: clean AUC and log loss on validation crops; PGD on the fixed subset's detected
        fakes; what the shipped defence (``cfg.defence``, fitted on this epoch's model, train and validation
        crops as after training) flags of those examples and of clean validation crops; the pooled
        Mahalanobis scorer's rates beside it (``pooled_*``, the curve before issue 17); ``val_s``: seconds.
        The defence is fitted (``defence_*`` keys) on the epochs :meth:`_fit_defence_now` picks."""
        cfg = self.cfg
        t0 = time.monotonic()
        logits, feats = predict(model, self.val_x)
        probs = sigmoid(logits)
        row = {"clean_auc": roc_auc(probs, self.val_y), "log_loss": log_loss(probs, self.val_y)}
        thr = balanced_threshold(probs, self.val_y)
        row["threshold"] = thr
        scorer = fit_scorer(model, self.crops["train"], seed=self.cfg.seed)
        combined = scorer.score(feats)
        cut = calibrate_threshold(combined, fpr=cfg.anomaly_fpr)
        # The shipped defence, fitted exactly as after training but on this epoch's model; its threshold
        # was set on out-of-fold scores of these clean validation crops, so defence_fpr_val is in-sample.
        # Validation must not change the training run: the fit below puts the model in eval mode, so its mode
        # is restored before the PGD (which runs in the mode training left it in, as before this curve existed).
        was_training = model.training
        defence, net = None, WithChannelStats(model)
        if self._fit_defence_now():
            t_fit = time.monotonic()
            defence = fit_defences(model, scorer, self.crops["train"], self.crops["val"], fpr=cfg.anomaly_fpr,
                                   seed=cfg.seed, names=[cfg.defence])[cfg.defence]  # fmt: skip
            model.train(was_training)
            row["defence_fit_s"] = time.monotonic() - t_fit
            d_clean = defence.combine(crop_features(defence, scorer, net, self.crops["val"].images))
            row["defence_fpr_val"] = float((d_clean > defence.threshold).mean())
        # PGD against the fixed subset's fakes that the model detects at the calibrated threshold.
        sub = self.val_sub.numpy()
        fakes = sub[(self.val_y[sub] == 1) & (probs[sub] > thr)]
        row["attacked"] = len(fakes)
        if len(fakes):
            x = self.val_x[fakes]
            y = torch.ones(len(fakes))
            x_adv = attacks.pgd(LogitsOnly(model), x, y, cfg.eval_eps, steps=cfg.eval_pgd_steps, generator=self.gen)
            adv_logits, adv_feats = predict(model, x_adv)
            fooled = adv_logits <= logit(thr)
            row["pgd_success"] = float(fooled.mean())
            if defence is not None:  # the defence scores uint8 crops, as a worker receives them
                d_adv = defence.combine(crop_features(defence, scorer, net, to_uint8(x_adv))) > defence.threshold
                row["defence_detection_rate"] = float(d_adv.mean())
                row["defence_detection_rate_fooling"] = float(d_adv[fooled].mean()) if fooled.any() else float("nan")
            adv_scores = scorer.score(adv_feats)
            row["pooled_detection_rate"] = float((adv_scores > cut).mean())
            row["pooled_detection_rate_fooling"] = float((adv_scores[fooled] > cut).mean()) if fooled.any() else float("nan")
        row["pooled_fpr_val"] = float((combined > cut).mean())
        row["val_s"] = time.monotonic() - t0
        return row

    def _fit_defence_now(self) -> bool:
        """Whether this epoch's row fits the shipped defence: every adversarial epoch (the phase whose model
        ships), and every ``val_defence_every``-th clean epoch and the last one (a fit costs about a clean epoch)."""
        k, e = self.cfg.val_defence_every, self.epoch + 1
        return self.epoch >= self.gan_epochs or k <= 1 or e % k == 0 or e == self.gan_epochs

    # -- whole run ------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        t_start = time.monotonic()
        self.load_data()
        self.build_models()
        self.maybe_resume()
        loader = self._loader()
        cfg = self.cfg
        if cfg.max_minutes and self.dist.on:
            raise ConfigError("max_minutes is single-process only (ranks would stop after different epochs)")
        self.adv = AdversarialPhase(cfg, len(loader), self.history, self.dist.on)
        cap, last_s = TimeCap(cfg.max_minutes, adversarial_cost(cfg.pgd_train_steps, self.adv.objective), t_start), None
        t0 = time.monotonic()
        while self.epoch < self.gan_epochs + cfg.adv_epochs:
            phase = "gan" if self.epoch < self.gan_epochs else "adv"
            if phase == "gan" and cap.end_clean_phase(last_s, cfg.adv_epochs, self.log):
                self.gan_epochs, phase = self.epoch, "adv"  # --max-minutes: keep time for the PGD phase
            if phase == "adv" and cap.stop(last_s, self.epoch - self.gan_epochs, cfg.adv_epochs, self.log):
                break
            if phase == "adv" and self.standard_state is None:
                self.standard_state = {k: v.clone() for k, v in self.D.state_dict().items()}
                for group in self.opt_d.param_groups:
                    group["lr"] = cfg.adv_lr
            if phase == "adv" and self.adv.done:
                break
            eps = eps_at(cfg, self.adv.progress) if phase == "adv" else 0.0
            spent = self.adv.elapsed
            te = time.monotonic()
            losses = self.train_epoch(loader, phase, eps)
            train_s = time.monotonic() - te
            row = {"epoch": self.epoch + 1, "phase": phase, "train_eps": self.adv.last_eps if phase == "adv" else eps,
                   **losses, "train_s": train_s}  # fmt: skip
            if phase == "adv":
                row.update(adv_objective=self.adv.objective, budget_s=self.adv.elapsed - spent)
            if self.dist.main:
                row.update(self.validate(self.D, eps))
                self.log.info("epoch done", **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
            self.history.append(row)
            self.epoch += 1
            self.save_checkpoint()
            self.dist.barrier()
            last_s = time.monotonic() - te
        self.provenance["epochs"] = cap.record(self.epoch, self.gan_epochs, cfg)
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
        standard = build_detector(cfg.arch, cfg.image_size, cfg.width)
        standard.load_state_dict(self.standard_state)
        warm_up_spectral_norm(standard, iters=5)
        standard.eval()

        # Decision thresholds and the Mahalanobis scorer, on train and validation data only.
        val = self.crops["val"]
        frame_thr, video_thr = decision_thresholds(D, val, self.val_x)
        val_adv = attacks.fgsm(LogitsOnly(D), self.val_x[self.val_sub], torch.from_numpy(self.val_y[self.val_sub.numpy()]).float(),
                               8 / 255, random_start=True, generator=self.gen)  # fmt: skip
        scorer, scorer_calibration = calibrated_scorer(D, self.crops["train"], val, self.val_x, val_adv, seed=cfg.seed,
                                                       fpr=cfg.anomaly_fpr, adv_video=val.video[self.val_sub.numpy()])  # fmt: skip
        anomaly_thr = scorer.threshold
        # The worker's second line of defence (issue 8, defence.npz): train and validation crops only.
        self.defences = fit_defences(D, scorer, self.crops["train"], val, fpr=cfg.anomaly_fpr, seed=cfg.seed)
        shipped = self.defences[cfg.defence]

        # Held-out test split: both models, same data.
        test = self.crops["test"]
        x_test = as_float_tensor(test.images)
        y_test = test.labels.astype(np.float64)
        metrics: dict[str, Any] = {
            "adversarially_trained": heldout_metrics(D, x_test, y_test, test, frame_thr, video_thr, scorer, cfg),
        }
        std_thr = balanced_threshold(sigmoid(predict(standard, self.val_x)[0]), self.val_y)
        metrics["standard"] = heldout_metrics(standard, x_test, y_test, test, std_thr, None, None, cfg)
        metrics["standard"]["frame_threshold"] = std_thr
        adv_m, std_m = metrics["adversarially_trained"], metrics["standard"]
        metrics["clean_auc_drop"] = std_m["clean_frame_auc"] - adv_m["clean_frame_auc"]

        # Out-of-distribution crops (kinds never used for fitting), scored as served: flagged by the shipped
        # defence or gated by the quality gate with the face check of the model's crop detector (issue 17).
        # The pooled scorer's rates (the table before issue 17) stay beside them, labelled.
        ood = ood_sets(test.images, n=min(200, len(test)), seed=cfg.seed + 2)
        net = WithChannelStats(D).eval()
        face_check = face_checker(cfg.crop_detector)
        by_set = ood_flagged_or_gated(ood, lambda imgs: shipped.combine(crop_features(shipped, scorer, net, imgs)),
                                      shipped.threshold, face_check)  # fmt: skip
        rates = {k: v["flagged_or_gated_rate"] for k, v in by_set.items()}
        defence_clean = clean_rates(shipped, scorer, D, test)
        pooled = {k: float((scorer.score(predict(D, as_float_tensor(v))[1]) > anomaly_thr).mean()) for k, v in ood.items()}
        pooled_clean = float((scorer.score(predict(D, x_test)[1]) > anomaly_thr).mean())
        metrics["ood_detection"] = {
            **rates, "all": float(np.mean(list(rates.values()))), "by_set": by_set, "defence": cfg.defence,
            "face_check": face_check_detector(cfg.crop_detector),
            "clean_test_fpr": defence_clean["crop"],
            "clean_gated_rate": gated_rates(test.images, np.zeros(len(test), bool), has_face=face_check(test.images))["gated_rate"],
            "pooled_scorer_flagged": {**pooled, "all": float(np.mean(list(pooled.values()))), "clean_test_fpr": pooled_clean},
        }  # fmt: skip

        # Issue 17: how the thresholds were set, their bootstrap spread, the shipped defence's clean test rates.
        metrics["calibration"] = {"scorer": scorer_calibration, "defence": shipped.calibration,
                                  "defence_clean_test_fpr": defence_clean}  # fmt: skip
        thresholds = {"frame_prob": frame_thr, "video_prob": video_thr, "anomaly": anomaly_thr,
                      "anomaly_fpr": cfg.anomaly_fpr, "defence_crop": shipped.threshold,
                      "defence_track": shipped.track_threshold}  # fmt: skip
        self.timings["finish_s"] = time.monotonic() - t0
        return register(self, D, scorer, metrics, thresholds)


def _bar(total: int, desc: str, enabled: bool, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, unit=unit, dynamic_ncols=True)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run a whole training; on rank 0 returns the registered version's summary."""
    dist = init_distributed(cfg.device)
    try:
        return Trainer(cfg, dist).run()
    finally:
        if dist.on:
            torch.distributed.destroy_process_group()
