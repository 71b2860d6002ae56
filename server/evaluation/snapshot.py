"""Signed snapshots of closed evaluation periods: canonical bytes, the server's Ed25519 key, and
the offline check.

Imports only the standard library and `cryptography`, so that `jishi period verify FILE` runs on
an evaluator's PC without the database or the rest of the server (like `jishi verify`).

An exported snapshot is one JSON file:
    {"format": "jishi-period-snapshot", "version": 1, "payload": "<canonical JSON text>",
     "signature": "<base64 Ed25519 signature of the payload's UTF-8 bytes>",
     "public_key": "<base64 raw 32-byte Ed25519 public key>",
     "parts": {"unit/U1": "<canonical JSON text>", ...}}
The signed payload is small: the period, the closing, the audit head, the hours per instrument
and, under "parts", the SHA-256 of each large part (the region's report, each unit's report and
evidence manifest), which the file carries beside it. Texts, not nested objects, so that the
signed and hashed bytes are exactly what the file holds, whatever JSON library reads it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = "jishi-period-snapshot"
VERSION = 1


def canonical(obj: Any) -> bytes:
    """The one byte form of a payload: sorted keys, no spaces, UTF-8 (what is signed and hashed)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def generate_key(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The key in `path`, made (PKCS#8 PEM, mode 0600) if the file does not exist; the flag says
    whether it was made now. An existing key is never overwritten: snapshots signed with it would
    no longer verify against the deployment's published public key."""
    if path.exists():
        return load_key(path), False
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key, True


def load_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def public_key_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return b64(raw)


def sign(key: Ed25519PrivateKey, payload: bytes) -> tuple[str, str]:
    """(signature, public key), both base64."""
    return b64(key.sign(payload)), public_key_b64(key)


def export(payload: bytes, signature: str, public_key: str, parts: dict[str, bytes]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "payload": payload.decode("utf-8"),
        "signature": signature,
        "public_key": public_key,
        "parts": {name: body.decode("utf-8") for name, body in sorted(parts.items())},
    }


@dataclass
class Verification:
    ok: bool
    problems: list[str] = field(default_factory=list)
    payload: dict[str, Any] | None = None
    public_key: str = ""
    sha256: str = ""

    def text(self) -> str:
        head = "OK: signature verifies" if self.ok else "FAILED"
        lines = [head, f"payload sha256 {self.sha256}", f"public key {self.public_key}"]
        if self.payload is not None:
            lines.append(f"parts checked against the signed payload: {len(self.payload.get('parts', {}))}")
            lines.append(
                f"period {self.payload.get('period')} version {self.payload.get('version')}"
                f" closed {self.payload.get('closed_at')} by {self.payload.get('closed_by')}"
            )
        return "\n".join(lines + [f"problem: {p}" for p in self.problems])


def verify(doc: dict[str, Any], expected_public_key: str | None = None) -> Verification:
    """Check an exported snapshot: its signature against its public key and, when given, that this
    key is the deployment's (`expected_public_key`, base64). Without an expected key only the
    file's own consistency is shown: anyone can sign a forged payload with a key of their own."""
    out = Verification(ok=False, public_key=str(doc.get("public_key", "")))
    if doc.get("format") != FORMAT:
        out.problems.append(f"not a {FORMAT} file")
        return out
    try:
        payload = str(doc["payload"]).encode("utf-8")
        signature = base64.b64decode(str(doc["signature"]), validate=True)
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(out.public_key, validate=True))
    except (KeyError, ValueError) as e:
        out.problems.append(f"malformed: {e}")
        return out
    out.sha256 = sha256_hex(payload)
    try:
        public.verify(signature, payload)
    except InvalidSignature:
        out.problems.append("the signature does not match the payload (altered, or signed by another key)")
    if expected_public_key is not None and expected_public_key.strip() != out.public_key:
        out.problems.append("signed by a key other than the expected public key")
    try:
        out.payload = json.loads(payload)
    except ValueError as e:
        out.problems.append(f"payload is not JSON: {e}")
    if out.payload is not None:
        out.problems += check_parts(out.payload, doc.get("parts") or {})
    out.ok = not out.problems
    return out


def check_parts(payload: dict[str, Any], parts: dict[str, Any]) -> list[str]:
    """Every part the signed payload names must be in the file with the SHA-256 it gives."""
    problems = []
    named: dict[str, str] = payload.get("parts", {})
    for name, digest in sorted(named.items()):
        body = parts.get(name)
        if body is None:
            problems.append(f"part {name} is missing")
        elif sha256_hex(str(body).encode("utf-8")) != digest:
            problems.append(f"part {name} does not match its SHA-256 in the signed payload (altered)")
    problems += [f"part {name} is not named in the signed payload" for name in sorted(set(parts) - set(named))]
    return problems
