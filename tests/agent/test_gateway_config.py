"""Gateway config: [[instrument]] tables over shared defaults; what instruments must not share."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import Config, ConfigError, GatewayConfig, load, load_any
from tests.agent.helpers import ROOT, cli

EXAMPLE = ROOT / "deploy" / "agent" / "gateway-example.toml"

BASE = """
[gateway]
id = "gw1"

[agent]
unit = "u1"
data_dir = "data"
heartbeat_s = 120

[mqtt]
host = "broker.lan"
port = 8883

[state]
confirm_s = 5
"""


def inst(ident: str, slave: int, port: str = "/dev/ttyBUS0", extra: str = "", det_extra: str = "") -> str:
    return f"""
[[instrument]]
id = "{ident}"
instrument = "i-{ident}"
{extra}
[instrument.state]
running = "power"
[instrument.detectors.power]
kind = "power_meter"
port = "{port}"
slave = {slave}
levels = [{{ state = "off", below_w = 5 }}, {{ state = "running" }}]
{det_extra}
"""


def gw(tmp_path: Path, text: str) -> GatewayConfig:
    p = tmp_path / "gw.toml"
    p.write_text(text)
    loaded = load_any(p, environ={})
    assert isinstance(loaded, GatewayConfig)
    return loaded


def mistake(tmp_path: Path, text: str) -> ConfigError:
    p = tmp_path / "gw.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_any(p, environ={})
    assert str(p) in str(err.value)
    return err.value


def test_the_example_gateway_has_eight_separate_agents() -> None:
    g = load_any(EXAMPLE, environ={})
    assert isinstance(g, GatewayConfig) and len(g.instruments) == 8
    cs = g.instruments
    for values in ([c.agent.id for c in cs], [c.agent.key_file for c in cs], [c.spool_path for c in cs],
                   [c.mqtt.username for c in cs], [c.mqtt.password_file for c in cs], [c.digest for c in cs]):
        assert len(set(values)) == 8, values
    assert all(c.mqtt.host == "jishi.example.edu.cn" and c.mqtt.tls for c in cs)
    bus = [c.detector("power").config for c in cs if c.detectors[0].name == "power"]
    assert len(bus) == 7 and {m.port for m in bus} == {"/dev/ttyUSB0"} and len({m.slave for m in bus}) == 7
    tga = g.select("imau-tga-550")
    assert tga.state.confirm_s == 10 and cs[0].state.confirm_s == 30  # an override, and the default
    assert not any(c.identity.os_session or c.identity.checkin for c in cs)


def test_defaults_inherited_and_paths_per_instrument(tmp_path: Path) -> None:
    g = gw(tmp_path, BASE + inst("a1", 1) + inst("a2", 2, extra='[instrument.mqtt]\nport = 1883\nclient_id = "c2"'))
    a1, a2 = g.instruments
    assert a1.agent.data_dir == tmp_path / "data" / "a1" and a1.agent.key_file == tmp_path / "data" / "a1" / "agent.key"
    assert a2.spool_path == tmp_path / "data" / "a2" / "spool.db"
    assert a1.agent.unit == a2.agent.unit == "u1" and a1.agent.heartbeat_s == 120
    assert (a1.mqtt.port, a2.mqtt.port, a2.mqtt.client_id) == (8883, 1883, "c2")
    assert a1.mqtt.host == a2.mqtt.host == "broker.lan" and a1.state.confirm_s == 5
    assert g.select("i-a2") is a2
    with pytest.raises(ConfigError, match="no instrument 'zz'"):
        g.select("zz")


def test_an_instrument_digest_ignores_its_neighbours(tmp_path: Path) -> None:
    """A `config` lifecycle record says this instrument's config changed, not the file's."""
    before = gw(tmp_path, BASE + inst("a1", 1) + inst("a2", 2))
    after = gw(tmp_path, BASE + inst("a1", 1) + inst("a2", 2, det_extra="hysteresis_w = 9"))
    assert before.instruments[0].digest == after.instruments[0].digest
    assert before.instruments[1].digest != after.instruments[1].digest


def test_single_instrument_configs_unchanged_and_not_confused(tmp_path: Path) -> None:
    single = load_any(ROOT / "deploy" / "agent" / "power-meter-only.toml", environ={})
    assert isinstance(single, Config)
    with pytest.raises(ConfigError, match=r"gateway config.*--instrument"):
        load(EXAMPLE, environ={})


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        (inst("a1", 1) + inst("a1", 2), "instrument[1].id", "agent id a1 is also used by instrument[0]"),
        (inst("a1", 1) + inst("a2", 1), "instrument[1].detectors.power", "address 1 on /dev/ttyBUS0 is already read"),
        (inst("a1", 1) + inst("a2", 2, det_extra="baudrate = 19200"), "instrument[1].detectors.power",
         "other line settings"),
        (inst("a1", 1) + inst("a2", 2, extra='data_dir = "data/a1"\nkey_file = "k2"'), "instrument[1].data_dir",
         "spool"),
        (inst("a1", 1) + inst("a2", 2, extra='[instrument.mqtt]\nclient_id = "a1"'), "instrument[1].mqtt.client_id",
         "MQTT client id"),
        (inst("a1", 1, extra="[instrument.identity]\nos_session = true"), "instrument[0].identity.os_session",
         "nobody at the instrument"),
        (inst("a1", 1, extra="heartbeat = 5"), "instrument[0].heartbeat", "did you mean 'heartbeat_s'"),
        (inst("a1", 1, extra='log_file = "x.log"'), "instrument[0].log_file", "[gateway]"),
        (inst("a1", 1, extra='[instrument.agent]\nheartbeat_s = 5'), "instrument[0].agent", "directly in the"),
        (inst("a1", 1, det_extra="slave = 300").replace("slave = 1\n", ""), "instrument[0].detectors.power.slave",
         "1..247"),
        (inst("a1", 1).replace('running = "power"', 'running = "powr"'), "instrument[0].state.running", "'powr'"),
        (inst("a1", 1).replace('[instrument.state]\nrunning = "power"\n', ""), "instrument[0].state.running",
         "its own running rule"),
        (inst("a1", 1) + '\n[detectors.power]\nkind = "process"\n', "detectors", "each [[instrument]] has its own"),
    ],
)
def test_gateway_mistakes_name_the_instrument_and_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    err = mistake(tmp_path, BASE + text)
    assert err.key == key, str(err)
    assert words in str(err)


def test_instrument_identity_may_not_be_a_gateway_default(tmp_path: Path) -> None:
    err = mistake(tmp_path, BASE.replace('unit = "u1"', 'unit = "u1"\nid = "x"') + inst("a1", 1))
    assert err.key == "agent.id" and "not a gateway-wide default" in str(err)


def test_no_broker_host_in_a_gateway(tmp_path: Path) -> None:
    err = mistake(tmp_path, BASE.replace('host = "broker.lan"\n', "") + inst("a1", 1))
    assert err.key == "instrument[0].mqtt.host" and "host name is required" in str(err)


def test_cli_over_a_gateway_config(tmp_path: Path) -> None:
    p = tmp_path / "gw.toml"
    p.write_text(BASE + inst("a1", 1) + inst("a2", 2))
    out = cli("run", "--config", str(p))  # no keys yet: all or nothing, each named
    assert out.returncode == 2 and "a1: key file" in out.stderr and "a2: key file" in out.stderr
    out = cli("keygen", "--config", str(p), "--instrument", "a2")
    assert out.returncode == 0 and (tmp_path / "data" / "a2" / "agent.key").exists()
    assert not (tmp_path / "data" / "a1" / "agent.key").exists()
    out = cli("keygen", "--config", str(p))  # the missing one made, the existing one never overwritten
    assert out.returncode == 1 and "refusing to overwrite" in out.stderr
    assert (tmp_path / "data" / "a1" / "agent.key").exists()
    out = cli("check", "--no-broker", "--config", str(p))
    assert "== instrument a1" in out.stdout and "== instrument a2" in out.stdout
    out = cli("calibrate", "--config", str(p), "--seconds", "0")
    assert out.returncode == 2 and "--instrument" in out.stderr and "a1, a2" in out.stderr


def test_a_shared_bus_is_not_locked_by_each_detector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A detector that locks its port would shut out every other meter on the bus but the first."""
    from agent.detectors import KINDS

    monkeypatch.setitem(KINDS, "bus_meter", "tests.agent.bus_detector")

    def meter(ident: str, slave: int, port: str, extra: str = "") -> str:
        return (f'\n[[instrument]]\nid = "{ident}"\ninstrument = "i-{ident}"\n[instrument.state]\nrunning = "m"\n'
                f'[instrument.detectors.m]\nkind = "bus_meter"\nport = "{port}"\nslave = {slave}\n{extra}')

    g = gw(tmp_path, BASE + meter("a1", 1, "/dev/bus") + meter("a2", 2, "/dev/bus") + meter("a3", 1, "/dev/alone"))
    locks = {c.agent.id: c.detector("m").config.exclusive for c in g.instruments}
    assert locks == {"a1": False, "a2": False, "a3": True}  # a port of its own keeps its lock
    err = mistake(tmp_path, BASE + meter("a1", 1, "/dev/bus", "exclusive = true") + meter("a2", 2, "/dev/bus"))
    assert err.key == "instrument[0].detectors.m.exclusive" and "bus shared" in str(err)
