"""The agent as a Windows service, on pywin32's service framework.

Registered by deploy/windows/install.ps1 as `python.exe -m agent.winservice` under the virtual
account `NT SERVICE\\JishiAgent`: started without arguments, this module hands itself to the
Service Control Manager (`StartServiceCtrlDispatcher`); `python -m agent.winservice debug` runs
the same service in a console. The config is JISHI_AGENT_CONFIG (install.ps1 sets it in the
service's environment), else `%PROGRAMDATA%\\Jishi\\agent.toml`; a gateway config runs all its
instruments. A stop request from the SCM ends the agent cleanly: `stop` record, sessions ended,
spool flushed, clean death message.

`serve()` is the platform-independent part (tested on Linux); only the class below needs Windows.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any

from agent.config import ConfigError, GatewayConfig, default_path, load_any

SERVICE_NAME = "JishiAgent"
DISPLAY_NAME = "Jishi instrument agent"
DESCRIPTION = "Records verified machine-hours of this instrument and sends them, signed, to the Jishi platform."
STOP_WAIT_MS = 30_000  # clean stop: finish the tick, record `stop`, flush for up to stop_flush_s

log = logging.getLogger("jishi.service")


def default_log_file(config: Path) -> Path:
    """A service has no console: log in `logs\\` beside the config unless the config names a log file."""
    return config.parent / "logs" / "agent.log"


def acl_paths(config: Path | None = None) -> dict[str, Any]:
    """What install.ps1 sets up for the service account: `secrets` (agent keys, MQTT password and TLS
    key, card key: readable by the service only), `readable` (the config, CA and client
    certificate), `writable` (spool folders, the log folder), `keys` (agent id -> its key file)."""
    path = config or default_path()
    loaded = load_any(path)
    configs = list(loaded.instruments) if isinstance(loaded, GatewayConfig) else [loaded]
    secrets: list[Path] = []
    readable: list[Path] = [path]
    writable: list[Path] = []
    for c in configs:
        readable += [p for p in (c.mqtt.ca_file, c.mqtt.cert_file) if p is not None]
        secrets += [p for p in (c.agent.key_file, c.mqtt.password_file, c.mqtt.key_file, c.identity.card_key_file)
                    if p is not None]
        writable += [c.agent.data_dir, c.spool_path.parent]
    log_file = loaded.gateway.log_file if isinstance(loaded, GatewayConfig) else loaded.agent.log_file
    writable.append((log_file or default_log_file(path)).parent)
    return {"secrets": sorted({str(p) for p in secrets}), "readable": sorted({str(p) for p in readable}),
            "writable": sorted({str(p) for p in writable}),
            "keys": {c.agent.id: str(c.agent.key_file) for c in configs}}


def serve(stop: threading.Event, config: Path | None = None, log_file: Path | None = None) -> int:
    """Run the configured agent (or gateway) until `stop` is set; 0 on a clean stop, 2 on a config
    problem (logged: a service has nobody to print to)."""
    from agent import lean
    from agent.cli import EXIT_CONFIG, _key_problem, _setup_logging

    path = config or default_path()
    try:
        loaded = load_any(path)
    except ConfigError as exc:
        _setup_logging("INFO", log_file or default_log_file(path), force=True)
        log.error("%s", exc)
        return EXIT_CONFIG
    gateway = isinstance(loaded, GatewayConfig)
    if isinstance(loaded, GatewayConfig):
        level, file, configs = loaded.gateway.log_level, loaded.gateway.log_file, list(loaded.instruments)
    else:
        level, file, configs = loaded.agent.log_level, loaded.agent.log_file, [loaded]
    lean.for_run()
    _setup_logging(level, file or log_file or default_log_file(path), gateway=gateway, force=True)
    problems = [f"{c.agent.id}: {p}" for c in configs if (p := _key_problem(c))]
    if problems:
        for p in problems:
            log.error("%s", p)
        return EXIT_CONFIG
    from agent.runner import Agent, Gateway
    from agent.spool import SpoolError

    try:
        runner: Agent | Gateway = Gateway(loaded) if isinstance(loaded, GatewayConfig) else Agent(loaded)
    except SpoolError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    runner.stop_event = stop  # the SCM's stop request is the agent's stop signal
    log.info("service %s running with %s", SERVICE_NAME, path)
    return runner.run()


def print_acl_paths() -> None:
    """`python -c "from agent.winservice import print_acl_paths; print_acl_paths()"` (install.ps1)."""
    print(json.dumps(acl_paths()))


if sys.platform == "win32":
    import servicemanager
    import win32service
    import win32serviceutil

    class JishiAgentService(win32serviceutil.ServiceFramework):
        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = DISPLAY_NAME
        _svc_description_ = DESCRIPTION

        def __init__(self, args: list[str]) -> None:
            super().__init__(args)
            self.stop_requested = threading.Event()

        def SvcStop(self) -> None:
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=STOP_WAIT_MS)
            self.stop_requested.set()

        def SvcDoRun(self) -> None:
            servicemanager.LogMsg(servicemanager.EVENTLOG_INFORMATION_TYPE, servicemanager.PYS_SERVICE_STARTED,
                                  (self._svc_name_, ""))
            try:
                code = serve(self.stop_requested)
            except Exception as exc:  # the Event Log is the only place an administrator will look
                servicemanager.LogErrorMsg(f"{SERVICE_NAME} failed: {type(exc).__name__}: {exc}")
                raise
            if code != 0:
                servicemanager.LogErrorMsg(f"{SERVICE_NAME} stopped with exit code {code}: see the log in "
                                           f"{default_log_file(default_path())} or the config's log_file")
                # raising makes the framework report a non-zero exit: the SCM's recovery (restart) applies
                raise SystemExit(code)
            servicemanager.LogMsg(servicemanager.EVENTLOG_INFORMATION_TYPE, servicemanager.PYS_SERVICE_STOPPED,
                                  (self._svc_name_, ""))

    def main() -> None:
        if len(sys.argv) == 1:  # started by the Service Control Manager
            servicemanager.Initialize()
            servicemanager.PrepareToHostSingle(JishiAgentService)
            servicemanager.StartServiceCtrlDispatcher()  # type: ignore[no-untyped-call]
        elif sys.argv[1] == "debug":  # the service in this console; Ctrl+C stops it
            win32serviceutil.DebugService(JishiAgentService, sys.argv[1:])
        else:  # start / stop / restart by name (install.ps1 registers the service)
            win32serviceutil.HandleCommandLine(JishiAgentService)

    if __name__ == "__main__":
        main()
