"""Configuration: defaults, YAML file, environment overrides, clear errors."""

from __future__ import annotations

import pytest

from nasloop.config import ConfigError, load_config


def test_defaults_without_sources() -> None:
    cfg = load_config(env={})
    assert cfg.novelty.port == 50053
    assert cfg.novelty.shingle_size == 7 and cfg.novelty.num_perm == 128
    assert cfg.novelty.threshold == 0.85
    assert cfg.store.url.startswith("file://")


def test_yaml_then_env_override(tmp_path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("novelty:\n  port: 6000\n  threshold: 0.9\nstore:\n  url: s3://bkt/pre\n")
    cfg = load_config(f, env={"NASLOOP_NOVELTY__PORT": "7000"})
    assert cfg.novelty.port == 7000  # env wins over the file
    assert cfg.novelty.threshold == 0.9
    assert cfg.store.url == "s3://bkt/pre"


def test_config_file_from_env_variable(tmp_path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("server:\n  log_format: text\n")
    assert load_config(env={"NASLOOP_CONFIG": str(f)}).server.log_format == "text"


def test_secrets_stay_strings_and_empty_means_unset() -> None:
    cfg = load_config(env={"NASLOOP_STORE__SECRET_KEY": "0012", "NASLOOP_SERVER__METRICS_PORT": ""})
    assert cfg.store.secret_key.get_secret_value() == "0012"
    assert cfg.server.metrics_port is None
    assert "0012" not in repr(cfg)  # secrets never show up in logs


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"NASLOOP_NOVELTY__PORTT": "1"}, "novelty.portt"),
        ({"NASLOOP_NOVELTY__THRESHOLD": "1.5"}, "novelty.threshold"),
        ({"NASLOOP_NOVELTY__PORT": "abc"}, "novelty.port"),
        ({"NASLOOP_STORE__URL": "ftp://x"}, "store.url"),
        ({"NASLOOP_STORE__URL": "s3://"}, "bucket"),
        ({"NASLOOP_BOGUS__X": "1"}, "bogus"),
        ({"NASLOOP_STORE_URL": "s3://b"}, "two underscores"),
    ],
)
def test_invalid_values_name_the_key(env, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_config(env=env)


def test_unreadable_or_malformed_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("novelty: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, env={})
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar, env={})


def test_cli_refuses_bad_configuration(tmp_path) -> None:
    import subprocess
    import sys

    for args, env, fragment in [
        (["--port", "70000"], {}, "invalid --port"),
        ([], {"NASLOOP_NOVELTY__THRESHOLD": "7"}, "novelty.threshold"),
    ]:
        out = subprocess.run(
            [sys.executable, "-m", "services.cli", "serve", "novelty", *args],
            env={"PATH": "/usr/bin:/bin", **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2 and fragment in out.stderr, out.stderr
