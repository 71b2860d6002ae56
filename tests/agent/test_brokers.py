"""Several brokers (the nodes of a cluster): `[mqtt] more_brokers`, validated, in order after host:port."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load
from tests.agent.test_config import MINIMAL, write


def _with_mqtt(section: str) -> str:
    """MINIMAL with its [mqtt] section replaced (a broker host is required, so MINIMAL has one)."""
    return MINIMAL.replace('[mqtt]\nhost = "broker.lan"\n', section)


def test_more_brokers_follow_host_and_port(tmp_path: Path) -> None:
    mqtt = '[mqtt]\nhost = "mq1"\nport = 8883\nmore_brokers = ["mq2:8883", "10.0.0.3:1883"]\n'
    cfg = load(write(tmp_path, _with_mqtt(mqtt)))
    assert cfg.mqtt.brokers() == [("mq1", 8883), ("mq2", 8883), ("10.0.0.3", 1883)]
    assert load(write(tmp_path, MINIMAL)).mqtt.brokers() == [("broker.lan", 1883)]


@pytest.mark.parametrize("bad", ['["mq2"]', '["mq2:0"]', '[":1883"]', '["mq2:http"]'])
def test_a_broker_that_is_not_host_port_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="more_brokers"):
        load(write(tmp_path, _with_mqtt(f'[mqtt]\nhost = "mq1"\nmore_brokers = {bad}\n')))
