"""A detector kind for config tests only: a meter on a port that can be locked (`exclusive`)."""

from __future__ import annotations

from dataclasses import dataclass

from agent.config import require


@dataclass(frozen=True)
class Config:
    port: str
    slave: int = 1
    exclusive: bool = True

    def __post_init__(self) -> None:
        require(1 <= self.slave <= 247, "slave", "Modbus addresses are 1..247")


def create(name: str, cfg: Config) -> object:
    raise NotImplementedError("config tests only")
