"""The ingest process's and the alerts job's stop signal (server/signals.py) never hangs, whatever
line of `Event.wait` the main thread is on when it arrives (tests/signal_lines.py)."""

from __future__ import annotations

from tests.signal_lines import signalled_at_every_line


def test_sigterm_inside_event_wait_sets_the_stop() -> None:
    raised = signalled_at_every_line(
        setup="from server.signals import stop_on_signals\nstop = threading.Event()\n"
              "told = []\nstop_on_signals(stop, told.append)",
        loop="stop.wait(0.001)",  # as Ingest.run_until and the alerts job wait
        files="{threading.__file__}",
        check="assert stop.wait(10) and told and set(told) == {signal.SIGTERM}")
    assert raised >= 3
