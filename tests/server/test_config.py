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
