"""What a serial port raises when its adapter is unplugged, for the detectors that use pyserial.

On POSIX pyserial's `reset_input_buffer` (tcflush) and settings calls on a vanished USB or RS-485
adapter raise `termios.error`, which is not an `OSError`; reads raise `SerialException`. A
detector catches all of them, closes the port and reopens it later (rate-limited).
"""

from __future__ import annotations

import sys

import serial

_TERMIOS: tuple[type[Exception], ...] = ()
if sys.platform != "win32":  # Windows has no termios; its pyserial raises SerialException / OSError
    import termios

    _TERMIOS = (termios.error,)

PORT_ERRORS: tuple[type[Exception], ...] = (OSError, serial.SerialException, *_TERMIOS)


def describe(exc: BaseException) -> str:
    """An error text for evidence; a port locked by another program says which one it likely is."""
    text = f"{type(exc).__name__}: {exc}"
    if "lock" in text.lower() or "access is denied" in text.lower():  # POSIX flock; Windows
        text += " (another program holds the port: the running agent service, or the instrument's software)"
    return text
