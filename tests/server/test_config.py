"""Settings: TOML file, environment overrides, clear messages for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import ConfigError, load


def test_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "s.toml"
    f.write_text('[database]\ndsn = "postgresql://db/x"\n[mqtt]\nhost = "broker"\nport = 1884\n'
                 "[ingest]\nresend_after_s = 5.0\n")
    monkeypatch.setenv("JISHI_MQTT__PORT", "8883")
    s = load(f)
    assert (s.database.dsn, s.mqtt.host, s.mqtt.port, s.ingest.resend_after_s) == ("postgresql://db/x", "broker",
                                                                                   8883, 5.0)
    assert s.derive.params().tolerance_permille == 1500


def test_bad_values_are_named(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('[mqtt]\nport = 70000\nshare_group = "bad group"\n[ingest]\nbatch_max_messages = 0\n'
                 '[derive]\ntimezone = "Mars/Olympus"\n')
    with pytest.raises(ConfigError) as e:
        load(f)
    msg = str(e.value)
    assert "mqtt.port" in msg and "mqtt.share_group" in msg and "ingest.batch_max_messages" in msg
    f.write_text('[derive]\ntimezone = "Mars/Olympus"\n')
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        load(f)
    f.write_text("[ingest]\nno_such_setting = 1\n")
    with pytest.raises(ConfigError, match="no_such_setting"):
        load(f)
    f.write_text("[ingest\n")
    with pytest.raises(ConfigError):
        load(f)
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "missing.toml")


def test_cli_reports_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from server.cli import main

    f = tmp_path / "s.toml"
    f.write_text("[mqtt]\nport = -1\n")
    assert main(["--config", str(f), "config"]) == 2
    assert "mqtt.port" in capsys.readouterr().err


def test_web_section_one_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The web process reads the same model: its section from the file, `JISHI_WEB__*`, and the
    deployments' historical `JISHI_WEB_<FIELD>` / `JISHI_DSN`; arguments win over all of them."""
    for name in ("JISHI_WEB_DSN", "JISHI_DSN", "JISHI_WEB_MQTT_HOST", "JISHI_WEB_COOKIE_SECURE", "JISHI_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    f = tmp_path / "s.toml"
    f.write_text('[web]\nmqtt_port = 8883\nlow_use_threshold = 0.3\n')
    monkeypatch.setenv("JISHI_DSN", "postgresql://replica/jishi")
    monkeypatch.setenv("JISHI_WEB_MQTT_HOST", "broker.example")
    monkeypatch.setenv("JISHI_WEB_COOKIE_SECURE", "false")
    monkeypatch.setenv("JISHI_WEB__POOL_MAX", "3")
    s = load(f, web={"session_ttl_s": 60})
    w = s.web
    assert (w.dsn, w.mqtt_host, w.mqtt_port, w.cookie_secure, w.pool_max, w.low_use_threshold, w.session_ttl_s) == (
        "postgresql://replica/jishi", "broker.example", 8883, False, 3, 0.3, 60)
    monkeypatch.setenv("JISHI_WEB_DSN", "postgresql://web/jishi")
    assert load(f).web.dsn == "postgresql://web/jishi"
    monkeypatch.delenv("JISHI_WEB__POOL_MAX")
    monkeypatch.setenv("JISHI_WEB_POOL_MAX", "many")
    with pytest.raises(ConfigError, match=r"web\.pool_max"):
        load(f)


def test_cli_config_hides_both_passwords(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from server.cli import main

    monkeypatch.delenv("JISHI_CONFIG", raising=False)
    monkeypatch.setenv("JISHI_DATABASE__DSN", "postgresql://ingest:s3cret-a@db/jishi")
    monkeypatch.setenv("JISHI_WEB_DSN", "host=db user=web password=s3cret-b dbname=jishi")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and out.count("***") >= 2
