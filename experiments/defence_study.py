"""Issue 8 study: which second line of defence catches PGD examples that fool the adversarially trained model.

Run ``python experiments/defence_study.py --models DIR --data D1 --data D2 --cache /tmp/b8/study.npz``.
Step 1 (:func:`collect`, torch, slow once) reproduces the trainer's splits of a registered version,
crafts the attacks and caches the model's outputs for every image set (raw and squeezed) in one
``.npz``. Step 2 (:func:`compare`, numpy, seconds) fits every method on the *validation* split only
(Gaussians on clean train features; logistic-regression ensembles on clean + noisy negatives vs
FGSM positives; thresholds at 5% false positives on clean validation crops or tracks) and measures
it on the test split: AUROC and detection rate on the PGD-10 eps=4/255 examples that fool the
model (per frame and per face track), clean test false positives and OOD detection rates.
Step 3 (:func:`adaptive`) attacks the shipped detector knowing it (per frame and whole clips).

All adversarial images are rounded to uint8, as the detect worker only ever sees uint8 crops.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, when run as a script

from forensics.defence import Defence  # noqa: E402
from forensics.registry import Registry
from forensics.scoring import MahalanobisScorer, calibrate_threshold, fit_layer_weights, fit_mahalanobis
from forensics.squeeze import SQUEEZERS
from trainer import attacks
from trainer.data import as_float_tensor, load_recipe_splits
from trainer.defence import TorchDefence, TorchLayerMahalanobis, to_uint8
from trainer.metrics import logit, roc_auc
from trainer.models import LogitsOnly, WithChannelStats, load_discriminator
from trainer.ood import ood_sets, scorer_fit_positives

EPS = 4 / 255
FPR = 0.05
LEE_MAGNITUDES = (0.0, 0.0005, 0.001, 0.002, 0.005, 0.01)
LID_K = 20
# Which blocks of forensics.defence each shippable method uses ("+ood pos": same blocks, more positives).
METHOD_BLOCKS = {"pooled_layers": ("pooled",), "channel_stats": ("channel",), "squeeze": ("squeeze",),
                 "channel_stats+squeeze": ("channel", "squeeze"),
                 "pooled+channel+squeeze": ("pooled", "channel", "squeeze")}  # fmt: skip
OOD_POS_VARIANTS = ("channel_stats+squeeze", "pooled+channel+squeeze")


# ---- step 1: data, attacks, cached outputs ------------------------------------------------------


@torch.no_grad()
def stats_outputs(net: WithChannelStats, images: np.ndarray, batch: int = 256) -> dict[str, np.ndarray]:
    """logits [N], mean{l}/std{l} [N,C_l] (float64) of uint8 crops."""
    out: dict[str, list] = {}
    for i in range(0, len(images), batch):
        lo, means, stds = net(as_float_tensor(images[i : i + batch]))
        out.setdefault("logits", []).append(lo.double().numpy())
        for l, (m, s) in enumerate(zip(means, stds)):
            out.setdefault(f"mean{l}", []).append(m.double().numpy())
            out.setdefault(f"std{l}", []).append(s.double().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def lee_preprocessed_scores(net: WithChannelStats, maha: TorchLayerMahalanobis, images: np.ndarray,
                            magnitudes=LEE_MAGNITUDES, batch: int = 256) -> np.ndarray:  # fmt: skip
    """Lee et al. 2018 input pre-processing: per layer l, x' = x - m * sign(grad_x d_l(x)); returns
    the layer-l score of x', float64 [N, len(magnitudes), L] (m = 0 is the plain score)."""
    n_layers = len(maha.means)
    out = np.zeros((len(images), len(magnitudes), n_layers))
    for i in range(0, len(images), batch):
        x = as_float_tensor(images[i : i + batch])
        for l in range(n_layers):
            xg = x.clone().requires_grad_(True)
            _, means, _ = net(xg)
            (g,) = torch.autograd.grad(maha(means)[:, l].sum(), xg)
            with torch.no_grad():
                for k, m in enumerate(magnitudes):
                    xp = torch.clamp(x - m * g.sign(), 0, 1)
                    out[i : i + len(x), k, l] = maha(net(xp)[1])[:, l].numpy()
    return out


def add_set(arrays: dict, net: WithChannelStats, name: str, imgs: np.ndarray, maha=None) -> None:
    """Cache an image set's outputs, raw and under every squeezer (and Lee's pre-processed scores)."""
    arrays[f"{name}/images"] = imgs
    for k, v in stats_outputs(net, imgs).items():
        arrays[f"{name}/raw/{k}"] = v
    for sq, fn in SQUEEZERS.items():
        for k, v in stats_outputs(net, fn(imgs)).items():
            arrays[f"{name}/{sq}/{k}"] = v
    if maha is not None:
        arrays[f"{name}/lee"] = lee_preprocessed_scores(net, maha, imgs)


def extend_cache(cache: Path, models_dir, seed: int = 0) -> None:
    """Add image sets that a cache written by an older version of this study lacks."""
    with np.load(cache, allow_pickle=False) as npz:
        if "val_fitpos/raw/logits" in npz.files:
            return
        arrays = {k: npz[k] for k in npz.files}
    art = Registry(models_dir).load(str(arrays["version"]))
    scorer = MahalanobisScorer.load(art.scorer_path)
    net = WithChannelStats(load_discriminator(art.path / "discriminator.pt")).eval()
    imgs = scorer_fit_positives(arrays["val/images"], seed=seed + 1)
    add_set(arrays, net, "val_fitpos", imgs, maha=TorchLayerMahalanobis(scorer))
    np.savez(cache, **arrays)


def collect(models_dir, version: str | None, data_dirs, out: Path, *, seed: int = 0, ood_n: int = 200,
            train_n: int = 2048, state_cache: str | None = None) -> Path:  # fmt: skip
    """Craft the attacks and cache every image set's outputs (raw and squeezed) to ``out`` (.npz)."""
    t0 = time.monotonic()
    art = Registry(models_dir).load(version)
    meta = json.loads((art.path / "report" / "metrics.json").read_text())
    config = meta["config"]
    splits = load_recipe_splits(data_dirs, config, state_cache or config["cache_dir"])
    D = load_discriminator(art.path / "discriminator.pt")
    net = WithChannelStats(D).eval()
    scorer = MahalanobisScorer.load(art.scorer_path)
    th = art.manifest["thresholds"]
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    lm = LogitsOnly(D)

    sets: dict[str, np.ndarray] = {}
    arrays: dict[str, np.ndarray] = {}
    tr = splits["train"]
    sets["train"] = tr.images[np.sort(rng.permutation(len(tr))[:train_n])]
    arrays["train/labels"] = tr.labels[np.sort(rng.permutation(len(tr))[:train_n])]
    for name in ("val", "test"):
        cs = splits[name]
        sets[name] = cs.images
        arrays[f"{name}/labels"] = cs.labels
        arrays[f"{name}/video"] = cs.video
        arrays[f"{name}/frame"] = cs.frame_index
    val_x = as_float_tensor(splits["val"].images)
    val_y = torch.from_numpy(splits["val"].labels.astype(np.float32))
    noise = torch.empty_like(val_x).uniform_(-EPS, EPS, generator=gen)
    sets["val_noisy"] = to_uint8(val_x + noise)
    for e in (4, 8):
        sets[f"val_fgsm{e}"] = to_uint8(attacks.fgsm(lm, val_x, val_y, e / 255))
    # Every frame of every fake test clip, so tracks are attacked whole.
    test = splits["test"]
    fake = np.where(test.labels == 1)[0]
    arrays["test_pgd/index"] = fake
    xt = as_float_tensor(test.images[fake])
    sets["test_pgd"] = to_uint8(attacks.pgd(lm, xt, torch.ones(len(fake)), EPS, steps=10, generator=gen))
    for k, v in ood_sets(test.images, n=min(ood_n, len(test)), seed=seed + 2).items():
        sets[f"ood_{k}"] = v
    print(f"attacks done {time.monotonic() - t0:.0f}s", flush=True)

    # Generic "not a clean crop" positives of the trainer's pooled scorer (uniform noise, tile-shuffled).
    sets["val_fitpos"] = scorer_fit_positives(splits["val"].images, seed=seed + 1)
    maha = TorchLayerMahalanobis(scorer)
    for name, imgs in sets.items():
        add_set(arrays, net, name, imgs, maha=maha if name != "train" else None)
        print(f"{name} done {time.monotonic() - t0:.0f}s", flush=True)
    arrays["thresholds"] = np.array(json.dumps(th))
    arrays["version"] = np.array(art.version)
    np.savez(out, **arrays)
    return out


# ---- step 2: methods, fitted on validation, measured on test ---------------------------------------


def layers(c: dict, name: str, kind: str, variant: str = "raw") -> list[np.ndarray]:
    """Per-layer features of an image set: kind 'mean' (pooled), 'std' or 'meanstd' (both, concatenated)."""
    n = sum(1 for k in c if k.startswith(f"{name}/{variant}/mean"))
    if kind == "meanstd":
        return [np.concatenate([c[f"{name}/{variant}/mean{l}"], c[f"{name}/{variant}/std{l}"]], axis=1) for l in range(n)]
    return [c[f"{name}/{variant}/{kind}{l}"] for l in range(n)]


def lid(ref: np.ndarray, x: np.ndarray, k: int = LID_K, exclude_self: bool = False) -> np.ndarray:
    """Maximum-likelihood local intrinsic dimensionality (Ma et al. 2018) of rows of x against ref."""
    d2 = (x**2).sum(1)[:, None] + (ref**2).sum(1)[None] - 2 * x @ ref.T
    d = np.sqrt(np.maximum(d2, 1e-12))
    d.sort(axis=1)
    d = d[:, 1 : k + 1] if exclude_self else d[:, :k]
    return -1.0 / (np.log(d / d[:, -1:] + 1e-12).mean(axis=1) - 1e-12)


def squeeze_deltas(c: dict, name: str, scorer: MahalanobisScorer) -> np.ndarray:
    """Per squeezer: |logit change| and |pooled Mahalanobis score change|, float64 [N, 2 * n_squeezers]."""
    base_l = c[f"{name}/raw/logits"]
    base_s = scorer.score(layers(c, name, "mean"))
    cols = []
    for sq in SQUEEZERS:
        cols.append(np.abs(c[f"{name}/{sq}/logits"] - base_l))
        cols.append(np.abs(scorer.score(layers(c, name, "mean", sq)) - base_s))
    return np.stack(cols, axis=1)


class LR:
    """Logistic regression on standardized feature columns (forensics.scoring.fit_layer_weights)."""

    def __init__(self, neg: np.ndarray, pos: np.ndarray):
        self.w, self.b = fit_layer_weights(neg, pos)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.b + x @ self.w


def method_features(c: dict) -> dict[str, Any]:
    """name -> function(set name) -> per-example feature matrix [N, F] (before the LR ensemble)."""
    tr_lab = c["train/labels"]
    pooled = fit_mahalanobis(layers(c, "train", "mean"), tr_lab)
    chan = fit_mahalanobis(layers(c, "train", "meanstd"), tr_lab)
    ref = [f for f in layers(c, "train", "mean")]
    # LID: standardize each layer by clean train statistics so one distance scale fits all layers.
    mu = [r.mean(0) for r in ref]
    sd = [r.std(0) + 1e-9 for r in ref]
    lee_k = {"k": 0}  # magnitude index, chosen on validation below

    def lid_feats(name):
        return np.stack([lid((r - m) / s, (f - m) / s, exclude_self=(name == "train"))
                         for r, m, s, f in zip(ref, mu, sd, layers(c, name, "mean"))], axis=1)  # fmt: skip

    feats = {
        "pooled_layers": lambda n: pooled.layer_scores(layers(c, n, "mean")),
        "lee_full": lambda n: c[f"{n}/lee"][:, lee_k["k"], :],
        "channel_stats": lambda n: chan.layer_scores(layers(c, n, "meanstd")),
        "lid": lid_feats,
        "squeeze": lambda n: squeeze_deltas(c, n, pooled),
    }
    feats["channel_stats+squeeze"] = lambda n: np.concatenate([feats["channel_stats"](n), feats["squeeze"](n)], 1)
    feats["pooled+channel+squeeze"] = lambda n: np.concatenate([feats["pooled_layers"](n), feats["channel_stats+squeeze"](n)], 1)
    # Lee's magnitude: the one whose LR ensemble separates validation clean from FGSM-4 best.
    best = -1.0
    for k in range(len(LEE_MAGNITUDES)):
        lee_k["k"] = k
        neg = np.concatenate([feats["lee_full"]("val"), feats["lee_full"]("val_noisy")])
        pos = np.concatenate([feats["lee_full"]("val_fgsm4"), feats["lee_full"]("val_fgsm8")])
        lr = LR(neg, pos)
        auc = roc_auc(np.concatenate([lr(neg), lr(pos)]), np.r_[np.zeros(len(neg)), np.ones(len(pos))])
        if auc > best:
            best, best_k = auc, k
    lee_k["k"] = best_k
    return {"features": feats, "pooled": pooled, "chan": chan, "lee_magnitude": LEE_MAGNITUDES[best_k]}


def tracks(video: np.ndarray, frame: np.ndarray) -> list[np.ndarray]:
    """Index arrays of each video's crops in frame order (one face per synthetic clip: a face track)."""
    return [np.where(video == v)[0][np.argsort(frame[video == v], kind="stable")] for v in np.unique(video)]


def temporal_features(frame_score: np.ndarray, logits: np.ndarray, feat: np.ndarray, trk: list[np.ndarray]) -> np.ndarray:
    """Per track: mean frame score, mean |consecutive logit change|, mean consecutive feature distance."""
    rows = []
    for t in trk:
        dl = np.abs(np.diff(logits[t])).mean() if len(t) > 1 else 0.0
        df = np.linalg.norm(np.diff(feat[t], axis=0), axis=1).mean() if len(t) > 1 else 0.0
        rows.append([frame_score[t].mean(), dl, df])
    return np.array(rows)


def fit_methods(feats: dict) -> dict[str, Any]:
    """name -> score function(set name) -> float64 [N]; LR ensembles fit on validation sets only."""
    methods: dict[str, Any] = {}
    for name, f in feats.items():
        neg = np.concatenate([f("val"), f("val_noisy")])
        pos = np.concatenate([f("val_fgsm4"), f("val_fgsm8")])
        lr = LR(neg, pos)
        methods[name] = lambda n, f=f, lr=lr: lr(f(n))
        methods[name].lr = lr
    # The same ensembles with the trainer's generic OOD positives (uniform noise, tile-shuffled crops) added.
    for name in OOD_POS_VARIANTS:
        f = feats[name]
        neg = np.concatenate([f("val"), f("val_noisy")])
        pos = np.concatenate([f("val_fgsm4"), f("val_fgsm8"), f("val_fitpos")])
        lr = LR(neg, pos)
        methods[f"{name} +ood pos"] = lambda n, f=f, lr=lr: lr(f(n))
        methods[f"{name} +ood pos"].lr = lr
    # The current recipe: pooled layers, LR clean vs FGSM-8 (the trainer also adds uniform noise and
    # tile-shuffled crops as positives), on the same cached sets as the others for a like-for-like row.
    cur = LR(feats["pooled_layers"]("val"), feats["pooled_layers"]("val_fgsm8"))
    return {"current (pooled, LR clean vs FGSM-8)": lambda n: cur(feats["pooled_layers"](n)), **methods}


def compare(cache: Path) -> dict[str, Any]:
    """The methods table: every method fitted on validation, measured on the same test examples."""
    c = dict(np.load(cache, allow_pickle=False))
    th = json.loads(str(c["thresholds"]))
    z_thr, z_vthr = logit(th["frame_prob"]), logit(th["video_prob"])
    mf = method_features(c)
    feats = mf["features"]
    artifact_scorer = None  # the current scorer is refit here exactly as the trainer did (pooled, same data)

    test_lab = c["test/labels"]
    test_logit = c["test/raw/logits"]
    idx = c["test_pgd/index"]
    pgd_logit = c["test_pgd/raw/logits"]
    detected = test_logit[idx] > z_thr
    fooled = detected & (pgd_logit <= z_thr)
    ood_names = [k.split("/")[0] for k in c if k.endswith("/raw/logits") and k.startswith("ood_")]

    # Tracks: test clips; attacked fake track = all its frames replaced by their PGD version.
    trk = tracks(c["test/video"], c["test/frame"])
    vtrk = tracks(c["val/video"], c["val/frame"])
    pos_in_pgd = {int(i): j for j, i in enumerate(idx)}
    fake_trk = [t for t in trk if test_lab[t[0]] == 1]
    adv_trk_idx = [np.array([pos_in_pgd[int(i)] for i in t]) for t in fake_trk]
    track_detected = np.array([test_logit[t].mean() > z_vthr for t in fake_trk])
    track_fooled = track_detected & np.array([pgd_logit[a].mean() <= z_vthr for a in adv_trk_idx])

    methods = fit_methods(feats)
    del artifact_scorer

    rows: dict[str, Any] = {}
    for name, score in methods.items():
        s_val, s_test, s_pgd = score("val"), score("test"), score("test_pgd")
        thr = calibrate_threshold(s_val, FPR)
        fool_s = s_pgd[fooled]
        row = {
            "auroc": roc_auc(np.r_[s_test, fool_s], np.r_[np.zeros(len(s_test)), np.ones(len(fool_s))]),
            "detection_rate": float((fool_s > thr).mean()),
            "clean_test_fpr": float((s_test > thr).mean()),
            "ood": {o: float((score(o) > thr).mean()) for o in ood_names},
        }
        row["ood_all"] = float(np.mean(list(row["ood"].values())))
        # Per track: mean of the per-frame scores, threshold at 5% of clean validation tracks.
        v_tr = np.array([s_val[t].mean() for t in vtrk])
        t_thr = calibrate_threshold(v_tr, FPR)
        clean_tr = np.array([s_test[t].mean() for t in trk])
        adv_tr = np.array([s_pgd[a].mean() for a in adv_trk_idx])[track_fooled]
        row["track_mean"] = {
            "auroc": roc_auc(np.r_[clean_tr, adv_tr], np.r_[np.zeros(len(clean_tr)), np.ones(len(adv_tr))]),
            "detection_rate": float((adv_tr > t_thr).mean()) if len(adv_tr) else float("nan"),
            "clean_test_fpr": float((clean_tr > t_thr).mean()),
        }
        # Temporal consistency + track mean, LR on validation tracks (clean vs FGSM-4 clips).
        row["temporal"] = _temporal_row(c, score, s_val, vtrk, trk, adv_trk_idx, track_fooled)
        rows[name] = row
    return {
        "version": str(c["version"]),
        "lee_magnitude": mf["lee_magnitude"],
        "attacked_fakes_detected": int(detected.sum()),
        "pgd_fooling": int(fooled.sum()),
        "tracks": {"val": len(vtrk), "test": len(trk), "fake_test": len(fake_trk), "fooled_fake": int(track_fooled.sum())},
        "methods": rows,
    }


def _temporal_row(c, score, s_val, vtrk, trk, adv_trk_idx, track_fooled) -> dict[str, float]:
    def tf(name, s, tr):
        return temporal_features(s, c[f"{name}/raw/logits"], c[f"{name}/raw/mean3"], tr)

    neg = tf("val", s_val, vtrk)
    pos = tf("val_fgsm4", score("val_fgsm4"), vtrk)
    lr = LR(neg, pos)
    thr = calibrate_threshold(lr(neg), FPR)
    clean = lr(tf("test", score("test"), trk))
    s_pgd = score("test_pgd")
    adv = lr(temporal_features(s_pgd, c["test_pgd/raw/logits"], c["test_pgd/raw/mean3"], adv_trk_idx))[track_fooled]
    return {
        "auroc": roc_auc(np.r_[clean, adv], np.r_[np.zeros(len(clean)), np.ones(len(adv))]),
        "detection_rate": float((adv > thr).mean()) if len(adv) else float("nan"),
        "clean_test_fpr": float((clean > thr).mean()),
    }


# ---- step 3: adaptive attacks on a method, knowing it --------------------------------------------


def adaptive(cache: Path, models_dir, method: str = "channel_stats+squeeze", *, max_frames: int = 200,
             seed: int = 0, steps: int = 20) -> dict[str, Any]:  # fmt: skip
    """Adaptive attacks (per frame, and per clip for the track rule) on ``method``; numbers from uint8 crops."""
    c = dict(np.load(cache, allow_pickle=False))
    th = json.loads(str(c["thresholds"]))
    z_thr, z_vthr = logit(th["frame_prob"]), logit(th["video_prob"])
    mf = method_features(c)
    methods = fit_methods(mf["features"])
    score = methods[method]
    blocks = METHOD_BLOCKS[method.removesuffix(" +ood pos")]
    art = Registry(models_dir).load(str(c["version"]))
    D = load_discriminator(art.path / "discriminator.pt")
    net = WithChannelStats(D).eval()
    pooled = mf["pooled"]
    shipped = Defence(blocks=blocks, channel=mf["chan"], squeezers=tuple(SQUEEZERS) if "squeeze" in blocks else (),
                      pooled_weights=pooled.weights, pooled_bias=pooled.bias, weights=score.lr.w, bias=score.lr.b)  # fmt: skip
    det = TorchDefence(D, pooled, shipped)
    s_val = score("val")
    thr = calibrate_threshold(s_val, FPR)
    vtrk = tracks(c["val/video"], c["val/frame"])
    t_thr = calibrate_threshold(np.array([s_val[t].mean() for t in vtrk]), FPR)
    z_scale = float(np.std(c["val/raw/logits"]))
    s_scale = float(np.std(s_val))
    gen = torch.Generator().manual_seed(seed)

    def measure(name: str, imgs: np.ndarray) -> np.ndarray:
        add_set(c, net, name, imgs)
        return score(name)

    out: dict[str, Any] = {"method": method, "steps": steps, "frame_threshold": thr, "track_threshold": t_thr}
    # Per frame: correctly detected fakes of the test split.
    test_logit = c["test/raw/logits"]
    det_idx = np.where((c["test/labels"] == 1) & (test_logit > z_thr))[0][:max_frames]
    x = as_float_tensor(c["test/images"][det_idx])
    t0 = time.monotonic()
    xa = to_uint8(attacks.adaptive_attack(det, x, None, z_thr=z_thr, s_thr=thr, z_scale=z_scale, s_scale=s_scale, steps=steps, gen=gen))
    s = measure("adaptive_frame", xa)
    fooled = c["adaptive_frame/raw/logits"] <= z_thr
    out["per_frame"] = {"attacked": len(det_idx), "fooled": float(fooled.mean()), "detected": float((s > thr).mean()),
                        "combined_success": float((fooled & (s <= thr)).mean()), "seconds": time.monotonic() - t0}  # fmt: skip
    # Per clip: every frame of each correctly detected fake test track, one perturbation per clip.
    trk = [t for t in tracks(c["test/video"], c["test/frame"]) if c["test/labels"][t[0]] == 1 and test_logit[t].mean() > z_vthr]
    order = np.concatenate(trk)
    clip = torch.from_numpy(np.concatenate([np.full(len(t), i) for i, t in enumerate(trk)])).long()
    t0 = time.monotonic()
    xa = to_uint8(attacks.adaptive_attack(det, as_float_tensor(c["test/images"][order]), clip, z_thr=z_vthr, s_thr=t_thr,
                                  z_scale=z_scale, s_scale=s_scale, steps=steps, gen=gen))  # fmt: skip
    s = measure("adaptive_clip", xa)
    lo = c["adaptive_clip/raw/logits"]
    cid = clip.numpy()
    tz = np.array([lo[cid == i].mean() for i in range(len(trk))])
    ts = np.array([s[cid == i].mean() for i in range(len(trk))])
    out["per_track"] = {"attacked": len(trk), "fooled": float((tz <= z_vthr).mean()), "detected": float((ts > t_thr).mean()),
                        "combined_success": float(((tz <= z_vthr) & (ts <= t_thr)).mean()),
                        "seconds": time.monotonic() - t0}  # fmt: skip
    return out


def print_table(res: dict[str, Any]) -> None:
    print(f"version {res['version']}  PGD fooling {res['pgd_fooling']}/{res['attacked_fakes_detected']}  "
          f"tracks {res['tracks']}  lee magnitude {res['lee_magnitude']}")  # fmt: skip
    print(f"{'method':42s} {'AUROC':>6s} {'det@5%':>7s} {'cleanFPR':>8s} {'OOD':>5s} | {'trkAUC':>6s} {'trkDet':>6s} "
          f"| {'tmpAUC':>6s} {'tmpDet':>6s}  ood")  # fmt: skip
    for name, r in res["methods"].items():
        t, tp = r["track_mean"], r["temporal"]
        print(f"{name:42s} {r['auroc']:6.3f} {r['detection_rate']:7.3f} {r['clean_test_fpr']:8.3f} {r['ood_all']:5.2f} | "
              f"{t['auroc']:6.3f} {t['detection_rate']:6.3f} | {tp['auroc']:6.3f} {tp['detection_rate']:6.3f}  "
              + " ".join(f"{k[4:]}={v:.2f}" for k, v in r["ood"].items()))  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python experiments/defence_study.py")
    p.add_argument("--models", required=True)
    p.add_argument("--version")
    p.add_argument("--data", action="append", required=True)
    p.add_argument("--cache", required=True, help=".npz of cached outputs (built when missing)")
    p.add_argument("--crops", help="face crop cache (default: the version's training config)")
    p.add_argument("--out", help="write the table as JSON here")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--adaptive", action="append", default=[], help="method to attack adaptively (repeatable)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    if not cache.exists():
        collect(args.models, args.version, args.data, cache, state_cache=args.crops)
    extend_cache(cache, args.models)
    res = compare(cache)
    print_table(res)
    res["adaptive"] = {}
    for m in args.adaptive:
        res["adaptive"][m] = adaptive(cache, args.models, m)
        print(json.dumps(res["adaptive"][m]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
