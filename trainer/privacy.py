"""What the served scores leak about training faces: membership inference and model inversion.

``forensics privacy --model V --data DIR`` measures, on a registered version and its own splits
(members = the version's train videos, non-members = its test videos, same distribution):

- **Membership inference** (Shokri et al. 2017; Yeom et al. 2018; Carlini et al. 2022):
  the loss-threshold attack (score = -cross-entropy of the true label) and a calibrated
  per-example variant (Watson et al. 2022, offline difficulty calibration: target loss minus the
  loss of ONE reference model trained on the version's validation split, population data that
  is neither member nor non-member; shadow models per example (LiRA) are not affordable on 2
  shared cores). AUC and TPR at 1% FPR, per crop and per video (mean over the video's crops),
  each with the 99th percentile of the AUC under random member/non-member labels (a permutation
  bound measured from the same data: AUCs below it are indistinguishable from chance), and each
  at what ``alerts.scores`` publishes: full, rounded to 1..4 decimals, label only.
- **Model inversion** (Fredrikson et al. 2015): white-box gradient ascent on the torch model
  toward the REAL class (the class of training identities) from noise and from a mean face of
  population (validation) crops, with a total-variation prior; black-box through ONNX Runtime
  with only what an alert exposes (NES gradient estimates from the fake probability at the
  published precision; label only: random search that keeps REAL-labelled images). Each
  reconstruction's SSIM (scikit-image) to its nearest training REAL crop against its nearest
  test REAL crop (equal numbers of crops, averaged over draws): an inversion that recovers
  training faces comes closer to the former. No face-embedding distance: dlib's ResNet
  (face_recognition_models) is not on PyPI (a git URL only) and the crops are synthetic.
- **Verdict cost** of each setting: clean frame and video AUC on the test split from the
  published value (label only: the hard decision).

Writes ``privacy.json``, ``inversion.png`` and ``report.html`` to ``<version>/report/privacy/``
(:mod:`trainer.privacy_report`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from forensics.disclosure import round_prob
from forensics.registry import Registry
from trainer.data import CropSet, as_float_tensor, load_recipe_splits, version_recipe
from trainer.membership import auc_tpr, loss_of, torch_prob
from trainer.models import Discriminator, build_discriminator, load_discriminator
from trainer.privacy_report import write_report

DECIMALS = (1, 2, 3, 4)


# ---- attack metrics ------------------------------------------------------------------------


def null_auc_bound(
    scores: np.ndarray, n_member: int, *, groups: np.ndarray | None = None, q: float = 0.99, perms: int = 2000,
    seed: int = 0,
) -> float:
    """The ``q`` quantile of the attack AUC when members are drawn at random from the same scores:
    the largest AUC chance alone gives at this sample size (a permutation bound; ties count half).

    With ``groups`` (one id per score, e.g. its video), whole groups are drawn, as many as the members
    span: crops of one video are correlated, so drawing single crops would make chance look too small.
    """
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n, n0 = len(scores), len(scores) - n_member
    if n_member == 0 or n0 == 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    if groups is None:
        pick = np.argsort(rng.random((perms, n)), axis=1)[:, :n_member]
        aucs = (ranks[pick].sum(1) - n_member * (n_member + 1) / 2) / (n_member * n0)
        return float(np.quantile(aucs, q))
    ids = np.unique(groups)
    k = len(np.unique(groups[:n_member]))
    aucs = []
    for _ in range(perms):
        mask = np.isin(groups, rng.choice(ids, size=k, replace=False))
        m = int(mask.sum())
        if 0 < m < n:
            aucs.append((ranks[mask].sum() - m * (m + 1) / 2) / (m * (n - m)))
    return float(np.quantile(aucs, q)) if aucs else float("nan")


def published(prob: np.ndarray, policy: str, threshold: float) -> np.ndarray:
    """What ``alerts.scores`` lets out of a fake probability: 'full', 'rounded:N' or 'label'."""
    if policy == "full":
        return prob.astype(np.float64)
    if policy == "label":
        return (prob > threshold).astype(np.float64)
    n = int(policy.split(":")[1])
    return np.array([round_prob(float(p), n) for p in prob])


def _per_video(values: np.ndarray, video: np.ndarray) -> np.ndarray:
    return np.array([values[video == v].mean() for v in np.unique(video)])


def membership(prob_m: np.ndarray, cs_m: CropSet, prob_n: np.ndarray, cs_n: CropSet, *, threshold: float,
               video_threshold: float, ref_m: np.ndarray | None = None, ref_n: np.ndarray | None = None,
               seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Attack AUC / TPR@1%FPR for every published form of the score, per crop and per video.

    ``prob_*``: the target's fake probability of member / non-member crops; ``ref_*``: a reference
    model's (for the calibrated attack). Under 'label' the attack sees whether the decision was right.
    """
    out: dict[str, Any] = {}
    policies = ["full", *(f"rounded:{d}" for d in DECIMALS), "label"]
    for policy in policies:
        row: dict[str, Any] = {}
        for level, thr in (("crop", threshold), ("video", video_threshold)):
            pm, pn = prob_m, prob_n
            ym, yn = cs_m.labels.astype(np.float64), cs_n.labels.astype(np.float64)
            if level == "video":  # the verdict publishes the mean over a video's crops
                pm, pn = _per_video(prob_m, cs_m.video), _per_video(prob_n, cs_n.video)
                ym, yn = _per_video(ym, cs_m.video), _per_video(yn, cs_n.video)
            sm, sn = -loss_of(published(pm, policy, thr), ym), -loss_of(published(pn, policy, thr), yn)
            auc, tpr = auc_tpr(sm, sn)
            # Per crop, chance is drawn by whole videos (their crops are correlated); per video, by video.
            groups = np.r_[cs_m.video, cs_n.video + cs_m.video.max() + 1] if level == "crop" else None
            row[level] = {"auc": auc, "tpr_at_1fpr": tpr, "members": len(sm), "non_members": len(sn),
                          "null_auc_99": null_auc_bound(np.r_[sm, sn], len(sm), groups=groups, seed=seed)}  # fmt: skip
            if ref_m is not None and ref_n is not None and policy == "full":
                rm, rn = ref_m, ref_n
                if level == "video":
                    rm, rn = _per_video(ref_m, cs_m.video), _per_video(ref_n, cs_n.video)
                cm, cn = sm + loss_of(rm, ym), sn + loss_of(rn, yn)  # -(target loss - reference loss)
                auc, tpr = auc_tpr(cm, cn)
                row[f"{level}_calibrated"] = {"auc": auc, "tpr_at_1fpr": tpr,
                                              "null_auc_99": null_auc_bound(np.r_[cm, cn], len(cm), groups=groups,
                                                                            seed=seed)}  # fmt: skip
        out[policy] = row
    return out


def verdict_cost(
    prob: np.ndarray, cs: CropSet, *, threshold: float, video_threshold: float
) -> dict[str, Any]:
    """Clean frame and video AUC on ``cs`` (the test split) from each published form of the score."""
    from sklearn.metrics import roc_auc_score

    out = {}
    vy = _per_video(cs.labels.astype(np.float64), cs.video)
    vp = _per_video(prob, cs.video)
    for policy in ["full", *(f"rounded:{d}" for d in DECIMALS), "label"]:
        out[policy] = {
            "frame_auc": float(roc_auc_score(cs.labels, published(prob, policy, threshold))),
            "video_auc": float(roc_auc_score(vy, published(vp, policy, video_threshold))),
        }
    for policy, row in out.items():
        row["frame_auc_cost"] = out["full"]["frame_auc"] - row["frame_auc"]
        row["video_auc_cost"] = out["full"]["video_auc"] - row["video_auc"]
    return out


# ---- reference model (calibrated attack) ---------------------------------------------------


def train_reference(
    cs: CropSet, size: int, *, epochs: int = 8, seed: int = 0, lr: float = 1e-3
) -> Discriminator:
    """A discriminator of the target's architecture trained (plain cross-entropy, flips) on ``cs``."""
    torch.manual_seed(seed)
    d = build_discriminator(size).train()
    x, y = as_float_tensor(cs.images), torch.as_tensor(cs.labels, dtype=torch.float32)
    opt = torch.optim.Adam(d.parameters(), lr=lr, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(32):
            xb = x[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            loss = F.binary_cross_entropy_with_logits(d.logits_only(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return d.eval()


# ---- model inversion -----------------------------------------------------------------------


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels, per image: float [N] for x [N,3,S,S]."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3)) + (x[..., 1:] - x[..., :-1]).abs().mean(
        dim=(1, 2, 3)
    )


def invert_whitebox(d: Discriminator, start: torch.Tensor, *, steps: int = 200, lr: float = 0.05,
                    tv: float = 1.0) -> torch.Tensor:  # fmt: skip
    """Gradient descent on -log P(REAL) (REAL: the training identities' class) plus a TV prior, in
    logit space so pixels stay in [0,1]. start/return float32 [N,3,S,S] in [0,1]."""
    z = torch.logit(start.clamp(0.02, 0.98)).clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    for p in d.parameters():
        p.requires_grad_(False)
    for _ in range(steps):
        x = torch.sigmoid(z)
        loss = F.softplus(d.logits_only(x)).sum() + tv * total_variation(x).sum() * x.shape[-1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.sigmoid(z).detach()


def invert_blackbox(query: Callable[[np.ndarray], np.ndarray], start: np.ndarray, *, budget: int = 1500,
                    samples: int = 10, sigma: float = 0.05, lr: float = 0.5, tv: float = 0.3,
                    label_only: bool = False, seed: int = 0) -> tuple[np.ndarray, int]:  # fmt: skip
    """Black-box inversion from what the daemon publishes. ``query``: float32 [N,3,S,S] in [0,1] ->
    published fake probability [N] (or 0/1 label). NES with antithetic Gaussian samples in logit
    space (the TV prior's gradient is the attacker's own, free); with ``label_only`` a random
    search that accepts a step when the published label stays REAL and the prior improves.
    Returns (reconstruction float32 [3,S,S], queries used)."""
    rng = np.random.default_rng(seed)
    z = np.log(np.clip(start, 0.02, 0.98) / (1 - np.clip(start, 0.02, 0.98))).astype(np.float32)
    used = 0

    def tv_grad(zz: np.ndarray) -> tuple[float, np.ndarray]:
        t = torch.tensor(zz[None], requires_grad=True)
        val = total_variation(torch.sigmoid(t)).sum() * zz.shape[-1]
        val.backward()
        return float(val), t.grad[0].numpy()

    def sig(a: np.ndarray) -> np.ndarray:
        return (1 / (1 + np.exp(-a))).astype(np.float32)

    if label_only:
        cur_label = float(query(sig(z)[None])[0])
        used += 1
        cur_tv, _ = tv_grad(z)
        while used < budget:
            cand = z + sigma * 4 * rng.standard_normal(z.shape).astype(np.float32)
            lab = float(query(sig(cand)[None])[0])
            used += 1
            cand_tv, _ = tv_grad(cand)
            if (lab <= cur_label) and (lab < cur_label or cand_tv < cur_tv):
                z, cur_label, cur_tv = cand, lab, cand_tv
        return sig(z), used
    while used + 2 * samples <= budget:
        u = rng.standard_normal((samples, *z.shape)).astype(np.float32)
        batch = np.concatenate([z + sigma * u, z - sigma * u])
        f = query(sig(batch))
        used += len(batch)
        g = ((f[:samples] - f[samples:])[:, None, None, None] * u).mean(0) / (2 * sigma)
        _, gtv = tv_grad(z)
        step = g + tv * gtv
        z = z - lr * step / (np.abs(step).mean() + 1e-12) * 0.05
    return sig(z), used


def nearest_ssim(recon: np.ndarray, pool: np.ndarray) -> float:
    """Highest SSIM of one reconstruction (float [3,S,S] in [0,1]) to any crop in ``pool`` (uint8 [K,S,S,3])."""
    from skimage.metrics import structural_similarity

    img = np.transpose(recon, (1, 2, 0)).astype(np.float64)
    return max(
        structural_similarity(img, p.astype(np.float64) / 255.0, channel_axis=2, data_range=1.0) for p in pool
    )


def _pool(cs: CropSet, n_videos: int, per_video: int, rng: np.random.Generator) -> np.ndarray:
    """REAL crops of ``n_videos`` random REAL videos of ``cs``, ``per_video`` crops each: uint8 [K,S,S,3]."""
    vids = np.unique(cs.video[cs.labels == 0])
    out = []
    for v in rng.permutation(vids)[:n_videos]:
        idx = np.flatnonzero(cs.video == v)
        out.append(cs.images[rng.permutation(idx)[:per_video]])
    return np.concatenate(out)


def similarity(recons: np.ndarray, train: CropSet, test: CropSet, *, draws: int = 5, per_video: int = 4,
               seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Nearest-crop SSIM of reconstructions to training vs test REAL crops, from pools of equal size and
    diversity (as many REAL videos from each split, ``per_video`` crops each), averaged over ``draws``."""
    rng = np.random.default_rng(seed)
    n_vid = min(len(np.unique(train.video[train.labels == 0])), len(np.unique(test.video[test.labels == 0])))
    s_train = np.zeros(len(recons))
    s_test = np.zeros(len(recons))
    for _ in range(draws):
        tr, te = _pool(train, n_vid, per_video, rng), _pool(test, n_vid, per_video, rng)
        s_train += [nearest_ssim(r, tr) for r in recons]
        s_test += [nearest_ssim(r, te) for r in recons]
    s_train, s_test = s_train / draws, s_test / draws
    return {"ssim_train": float(s_train.mean()), "ssim_test": float(s_test.mean()),
            "train_minus_test": float((s_train - s_test).mean()),
            "closer_to_train_share": float(np.mean(s_train > s_test)), "pool_videos": n_vid,
            "reconstructions": len(recons)}  # fmt: skip


# ---- one version ---------------------------------------------------------------------------


def run_privacy(models_dir, version: str, data_dirs, *, cache_dir: str | None = None, quick: bool = False,
                seed: int = 0, out_dir: str | Path | None = None, dp: bool = False,
                inversion_budget: tuple[int, int, int] | None = None) -> dict[str, Any]:  # fmt: skip
    """Membership inference, inversion and verdict cost for one registered version (see module doc);
    with ``dp`` also the DP-SGD study (trainer/dp.py) on the version's train and test crops.
    ``inversion_budget``: (reconstructions per start, white-box steps, black-box queries) instead of
    the defaults (quick: 3, 80, 600; else 6, 200, 2000)."""
    from forensics.runtime import OnnxDiscriminator

    art = Registry(models_dir).load(version)
    _meta, config = version_recipe(art)
    splits = load_recipe_splits(data_dirs, config, cache_dir or config.get("cache_dir", ".forensics/crops"))
    train, val, test = splits["train"], splits["val"], splits["test"]
    th = art.manifest["thresholds"]
    thr, vthr = float(th["frame_prob"]), float(th["video_prob"])
    onnx = OnnxDiscriminator(art.model_path, intra_op_threads=1)

    def served_prob(images_u8: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [onnx.run(images_u8[i : i + 256]).fake_prob for i in range(0, len(images_u8), 256)]
        )

    p_train, p_test = served_prob(train.images), served_prob(test.images)
    ref = train_reference(val, art.input_size, epochs=4 if quick else 8, seed=seed)
    result: dict[str, Any] = {
        "version": version, "data": [str(d) for d in data_dirs], "quick": quick, "seed": seed,
        "adversarial_epochs": config.get("adv_epochs"), "train_eps": config.get("eps"),
        "splits": {k: {"videos": len(np.unique(v.video)), "crops": len(v)} for k, v in splits.items()},
        "thresholds": {"frame_prob": thr, "video_prob": vthr},
        "reference_model": f"one, trained on the val split ({len(val)} crops, plain cross-entropy)",
    }  # fmt: skip
    result["membership"] = membership(p_train, train, p_test, test, threshold=thr, video_threshold=vthr,
                                      ref_m=torch_prob(ref, train.images), ref_n=torch_prob(ref, test.images),
                                      seed=seed)  # fmt: skip
    result["verdict_cost"] = verdict_cost(p_test, test, threshold=thr, video_threshold=vthr)
    budget = inversion_budget or ((3, 80, 600) if quick else (6, 200, 2000))
    result["inversion"], figure = _inversion(art, onnx, train, val, test, thr=thr, budget=budget,
                                             draws=2 if quick else 5, seed=seed)  # fmt: skip
    if out_dir is not None:
        write_report(result, figure, Path(out_dir))
    if dp:  # slow (per-sample gradients): the rest is on disk already
        from trainer.dp import dp_study

        result["dp"] = dp_study(train, test, art.input_size, epochs=4 if quick else 8, seed=seed)
        if out_dir is not None:
            write_report(result, figure, Path(out_dir))
    return result


def _inversion(art, onnx, train: CropSet, val: CropSet, test: CropSet, *, thr: float, budget: tuple[int, int, int],
               draws: int, seed: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:  # fmt: skip
    torch.manual_seed(seed)
    d = load_discriminator(art.path / "discriminator.pt")
    n, steps, queries = budget
    size = art.input_size
    mean_face = as_float_tensor(val.images[val.labels == 0]).mean(0, keepdim=True)
    noise = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 0.5 + 0.25
    starts = {"noise": noise, "mean_face": (mean_face + 0.05 * torch.randn(n, 3, size, size)).clamp(0, 1)}
    recons: dict[str, np.ndarray] = {}
    for name, s in starts.items():
        recons[f"whitebox_{name}"] = invert_whitebox(d, s, steps=steps).numpy()

    def query(policy: str):
        def q(x: np.ndarray) -> np.ndarray:
            return published(onnx.run_float(x.astype(np.float32)).fake_prob, policy, thr)

        return q

    for policy in ("full", "rounded:2", "label"):
        key = f"blackbox_{policy.replace(':', '')}"
        outs = []
        for i in range(n):
            r, _used = invert_blackbox(query(policy), starts["mean_face"][i].numpy(), budget=queries,
                                       label_only=policy == "label", seed=seed + i)  # fmt: skip
            outs.append(r)
        recons[key] = np.stack(outs)
    out: dict[str, Any] = {"budget_queries": queries, "whitebox_steps": steps, "per_start": n}
    recons["start_mean_face"] = starts["mean_face"].numpy()
    for key, rec in recons.items():
        p = onnx.run_float(rec.astype(np.float32)).fake_prob
        out[key] = {**similarity(rec, train, test, draws=draws, seed=seed), "mean_fake_prob": float(p.mean())}
    rng = np.random.default_rng(seed)
    return out, {**recons, "_train": _pool(train, n, 1, rng), "_test": _pool(test, n, 1, rng)}
