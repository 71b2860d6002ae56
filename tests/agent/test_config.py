"""Config: the example configs are valid; every mistake names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import Config, ConfigError, load, load_any
from agent.detectors.power_meter import Config as PowerConfig

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "deploy" / "agent").glob("*.toml"))

MINIMAL = """
[agent]
id = "a1"
unit = "u1"
instrument = "i1"
key_file = "k"
data_dir = "d"

[mqtt]
host = "broker.lan"

[state]
running = "power"

[detectors.power]
kind = "power_meter"
port = "/dev/null"
levels = [{ state = "off", below_w = 5 }, { state = "running" }]
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "agent.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_configs_are_valid(path: Path) -> None:
    loaded = load_any(path, environ={})
    for cfg in [loaded] if isinstance(loaded, Config) else loaded.instruments:
        assert cfg.detectors and cfg.state.running
        assert cfg.agent.heartbeat_s == 300  # the storage budget's default
        assert not cfg.samples.enabled


def test_three_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"mass-spectrometer-windows.toml", "serial-status-instrument.toml", "power-meter-only.toml",
            "gateway-example.toml"} <= names


def test_no_broker_host_is_a_clear_mistake(tmp_path: Path) -> None:
    """Not a silent localhost: an agent that talked to nobody looked healthy."""
    for text in (MINIMAL.replace('host = "broker.lan"\n', ""), MINIMAL.replace('host = "broker.lan"', 'host = " "')):
        assert text != MINIMAL
        with pytest.raises(ConfigError) as err:
            load(write(tmp_path, text), environ={})
        assert err.value.key == "mqtt.host" and "broker's host name is required" in str(err.value)
    assert load(write(tmp_path, MINIMAL.replace('host = "broker.lan"\n', "")),
                environ={"JISHI_AGENT_MQTT__HOST": "b.lan"}).mqtt.host == "b.lan"


def test_minimal_config_defaults_and_relative_paths(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, MINIMAL), environ={})
    assert cfg.agent.key_file == tmp_path / "k"
    assert cfg.spool_path == tmp_path / "d" / "spool.db"
    assert cfg.mqtt.port == 1883 and cfg.agent.heartbeat_s == 300
    power = cfg.detector("power").config
    assert isinstance(power, PowerConfig) and power.levels[0].below_w == 5.0


def test_environment_overrides(tmp_path: Path) -> None:
    env = {"JISHI_AGENT_MQTT__HOST": "broker.lan", "JISHI_AGENT_MQTT__PORT": "8883",
           "JISHI_AGENT_DETECTORS__POWER__SLAVE": "7"}
    cfg = load(write(tmp_path, MINIMAL), environ=env)
    assert cfg.mqtt.host == "broker.lan" and cfg.mqtt.port == 8883
    assert cfg.detector("power").config.slave == 7


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (("port = \"/dev/null\"", "port = 5"), "detectors.power.port", "expected a string"),
        (("[state]\nrunning = \"power\"", "[state]\nrunning = \"powr\""), "state.running", "'powr'"),
        (("[state]\nrunning = \"power\"", "[state]\nrunning = \"power or\""), "state.running", "ends too early"),
        (("[state]\nrunning = \"power\"", "[state]\nrunning = \"power.hot\""), "state.running", "predicate"),
        (("id = \"a1\"", "id = \"a 1\""), "agent.id", "must match"),
        (("id = \"a1\"", "id = \"a1\"\nheartbeat = 5"), "agent.heartbeat", "did you mean 'heartbeat_s'"),
        (("kind = \"power_meter\"", "kind = \"power_metre\""), "detectors.power.kind", "did you mean 'power_meter'"),
        (("{ state = \"running\" }", "{ state = \"running\", below_w = 9 }"), "detectors.power.levels[1].below_w",
         "open-ended"),
        (("{ state = \"off\", below_w = 5 }", "{ state = \"of\", below_w = 5 }"), "detectors.power.levels[0].state",
         "must be one of"),
        (("[agent]", "[agnet]\n[agent]"), "agnet", "unknown section"),
        (("data_dir = \"d\"", "data_dir = \"d\"\nsample_period_s = -1"), "agent.sample_period_s", "> 0"),
        (("data_dir = \"d\"", "data_dir = \"d\"\nsample_period_s = true"), "agent.sample_period_s",
         "expected a number"),
    ],
)
def test_mistakes_name_the_file_and_key(tmp_path: Path, change: tuple[str, str], key: str, words: str) -> None:
    text = MINIMAL.replace(*change, 1)
    assert text != MINIMAL
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(path, environ={})
    assert err.value.key == key, str(err.value)
    assert words in str(err.value)
    assert str(path) in str(err.value)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(write(tmp_path, "[agent\nid="))
    with pytest.raises(ConfigError, match=r"\[agent.key_file\].*is required"):
        load(write(tmp_path, MINIMAL.replace('key_file = "k"\n', "")))
    with pytest.raises(ConfigError, match="at least one"):
        load(write(tmp_path, MINIMAL.split("[detectors.power]")[0]))


def test_agent_config_module_does_not_use_pydantic() -> None:
    import subprocess
    import sys

    code = ("import sys, agent.config, agent.runner, agent.cli; "
            "assert 'pydantic' not in sys.modules, 'pydantic imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
