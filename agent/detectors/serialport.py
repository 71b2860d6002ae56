"""What a serial port raises when its adapter is unplugged, for the detectors that use pyserial.

On POSIX pyserial's `reset_input_buffer` (tcflush) and settings calls on a vanished USB or RS-485
adapter raise `termios.error`, which is not an `OSError`; reads raise `SerialException`. A
detector catches all of them, closes the port and reopens it later (rate-limited).
"""

from __future__ import annotations

import serial

try:
    import termios

    _TERMIOS: tuple[type[Exception], ...] = (termios.error,)
except ImportError:  # Windows
    _TERMIOS = ()

PORT_ERRORS: tuple[type[Exception], ...] = (OSError, serial.SerialException, *_TERMIOS)
