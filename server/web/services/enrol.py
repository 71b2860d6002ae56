"""What an operator hands to an instrument PC or gateway when enrolling its agent: the agent
configuration, the one command that creates the key and enrols it, and a QR code of both (a
phone at the instrument photographs it; no file has to travel on a USB stick)."""

from __future__ import annotations

import base64

import qrcode
import qrcode.constants
import qrcode.image.svg


def one_command(config_file: str, url: str, token: str) -> str:
    """Key pair, then enrolment with the one-time token: one line to paste on the PC or gateway."""
    return (f"jishi-agent keygen --config {config_file} && "
            f"jishi-agent enroll --config {config_file} --url {url} --token {token}")


def qr_data_url(text: str) -> str:
    """An SVG QR code of `text` as a data: URL (the pages' CSP allows data: images, not inline SVG
    scripts); rendered without PIL."""
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_L, border=2,
                         image_factory=qrcode.image.svg.SvgPathImage)
    code.add_data(text.encode("utf-8"))
    code.make(fit=True)
    svg: bytes = code.make_image().to_string()
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")


def qr_text(config: str, command: str) -> str:
    """The QR code's content: the configuration, with the command to run as its first comment."""
    return f"# {command}\n{config}"
