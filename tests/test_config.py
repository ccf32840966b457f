import subprocess
import sys

import pytest

from forensics.config import load_settings
from forensics.errors import ConfigError


def test_env_nested_values_are_read(monkeypatch):
    monkeypatch.setenv("FORENSICS_INGEST__BATCH_SIZE", "8")
    monkeypatch.setenv("FORENSICS_REDIS__PREFIX", "abc")
    s = load_settings()
    assert s.ingest.batch_size == 8 and s.redis.prefix == "abc"


def test_toml_file_is_read_and_env_overrides_it(tmp_path, monkeypatch):
    cfg = tmp_path / "f.toml"
    cfg.write_text('[ingest]\nbatch_size = 4\nfps = 5.0\n[[sources]]\nid = "cam1"\nurl = "rtsp://127.0.0.1:1/x"\n')
    s = load_settings(cfg)
    assert s.ingest.batch_size == 4 and s.ingest.fps == 5.0 and s.sources[0].id == "cam1"
    monkeypatch.setenv("FORENSICS_INGEST__BATCH_SIZE", "9")
    assert load_settings(cfg).ingest.batch_size == 9


@pytest.mark.parametrize(
    "toml, expected",
    [
        ("[ingest]\nbatch_sise = 4\n", "ingest.batch_sise: unknown key"),
        ("[ingest]\nbatch_size = -3\n", "ingest.batch_size: Input should be greater than or equal to 1 (got -3)"),
        ('[redis]\nurl = "http://x"\n', "redis.url: Value error, must start with redis://"),
        ('[faces]\ndetector = "dlib"\n', "faces.detector"),
        ("[ingest\n", "cannot read settings"),
    ],
)
def test_bad_config_file_fails_with_one_line_naming_the_key(tmp_path, toml, expected):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_environment_key_is_an_error(monkeypatch):
    monkeypatch.setenv("FORENSICS_INGST__BATCH_SIZE", "3")
    with pytest.raises(ConfigError, match="FORENSICS_INGST__BATCH_SIZE"):
        load_settings()


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_cli_prints_one_line_and_exit_2_on_bad_setting(tmp_path):
    env = {"FORENSICS_INGEST__FPS": "fast", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "forensics.cli", "ingest", "--watch", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["forensics: error: bad setting ingest.fps: Input should be a valid number, "
                     "unable to parse string as a number (got 'fast')"]  # fmt: skip
