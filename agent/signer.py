"""The agent's Ed25519 key, signed with libsodium (PyNaCl) rather than `cryptography`.

Memory: importing `cryptography` maps its statically linked OpenSSL, ~7 MB of resident memory
on top of the system OpenSSL that `ssl` and `hashlib` already load; PyNaCl costs ~2 MB
(bench/RESULTS.md, "Agent footprint"). Ed25519 signatures are deterministic (RFC 8032), so a key
signs the same bytes here as with `cryptography` (tests/agent/test_signer.py); the key file is the
same one base64url line (protocols/signing.py).
"""

from __future__ import annotations

from pathlib import Path

from nacl.signing import SigningKey

from protocols.signing import b64d, save_private

SEED_BYTES = 32


class RawPublic:
    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def public_bytes_raw(self) -> bytes:
        return self.raw


class AgentKey:
    """An Ed25519 private key (a `protocols.signing.Signer`)."""

    __slots__ = ("_key", "_public")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"an Ed25519 private key is {SEED_BYTES} bytes, got {len(seed)}")
        self._key = SigningKey(seed)
        self._public = RawPublic(bytes(self._key.verify_key))

    @classmethod
    def generate(cls) -> AgentKey:
        return cls(bytes(SigningKey.generate()))

    def sign(self, data: bytes, /) -> bytes:
        return self._key.sign(data).signature

    def public_key(self) -> RawPublic:
        return self._public

    def private_bytes_raw(self) -> bytes:
        return bytes(self._key)


def load_key(path: Path) -> AgentKey:
    """Read a key file written by `save_key` or `protocols.signing.save_private` (one base64url line)."""
    return AgentKey(b64d(path.read_text(encoding="ascii").strip()))


def save_key(key: AgentKey, path: Path) -> None:
    """Write the key readable by its owner only; refuse to overwrite an existing key."""
    save_private(key, path)
