"""A stop signal stops the agent whatever the main thread is doing when it arrives: raised at every
line of the main loop's waiting code (threading's and agent/waker.py's), the handler never hangs
(`jishi-agent run` ignored SIGTERM for 20 s in CI, 2026-12-03: its handler set a threading.Event
whose lock the interrupted `Event.wait` held). The whole stop: tests/agent/test_cli.py."""

from __future__ import annotations

from pathlib import Path

from tests.agent.helpers import write_config
from tests.signal_lines import signalled_at_every_line


def test_sigterm_inside_the_loops_wait_stops_the_agent(tmp_path: Path) -> None:
    class Nowhere:
        host, port = "127.0.0.1", 9

    cfg = write_config(tmp_path, agent_id="sig1", broker=Nowhere(), running="power", period=0.05, detectors="""
[detectors.power]
kind = "power_meter"
port = "/dev/null"
levels = [{ state = "off", below_w = 5 }, { state = "running" }]
""")
    raised = signalled_at_every_line(
        setup="from pathlib import Path\nimport agent.waker\nfrom agent.config import load\n"
              "from agent.runner import Agent\nrunner = Agent(load(Path(sys.argv[1]), environ={}))\n"
              "runner.install_signals()",
        loop="runner.wake.wait(0.001)\nrunner.wake.clear()\nstopping = runner.stopping()",  # as run() waits
        files="{threading.__file__, agent.waker.__file__}",
        check="assert stopping", args=[str(cfg)])
    assert raised >= 5
