"""Ed25519 keys, signatures and key ids (the `cryptography` package).

Keys travel as unpadded base64url of their 32 raw bytes. A key id is the first 16 hex digits of
SHA-256 of the raw public key: envelopes name the key that signed them so keys can be rotated.

Signing, key ids and key files take any `Signer`: cryptography's key, or the agent's libsodium key
(agent/signer.py; Ed25519 signatures are deterministic, so both give the same bytes). cryptography
is imported only by the functions that need it: the running agent never loads it (its statically
linked OpenSSL is ~6 MB of the agent's resident memory).
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class RawPublicKey(Protocol):
    def public_bytes_raw(self) -> bytes: ...


@runtime_checkable
class Signer(Protocol):
    """An Ed25519 private key: signs, and has a public key."""

    def sign(self, data: bytes, /) -> bytes: ...

    def public_key(self) -> RawPublicKey: ...

    def private_bytes_raw(self) -> bytes: ...


def b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64d(text: str) -> bytes:
    if not isinstance(text, str) or "=" in text:
        raise ValueError("expected unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def generate() -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def private_from_b64(text: str) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(b64d(text))


def private_to_b64(key: Signer) -> str:
    return b64e(key.private_bytes_raw())


def public_raw(key: Signer | RawPublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Signer) else key
    # *_bytes_raw() (cryptography >= 40) instead of the `serialization` module: same bytes, and
    # importing `serialization` costs the agent ~3 MB of its 40 MB budget.
    return pub.public_bytes_raw()


def public_to_b64(key: Signer | RawPublicKey) -> str:
    return b64e(public_raw(key))


def public_from_b64(text: str) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    raw = b64d(text)
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_id(key: Signer | RawPublicKey) -> str:
    return hashlib.sha256(public_raw(key)).hexdigest()[:16]


def sign(key: Signer, message: bytes) -> str:
    return b64e(key.sign(message))


def verify(key: Ed25519PublicKey, message: bytes, signature: str) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        raw = b64d(signature)
    except ValueError:
        return False
    if len(raw) != 64 or b64e(raw) != signature:
        # one spelling per signature: the spare bits of the last character must be zero, or a
        # replayed message could pass as new by changing them
        return False
    try:
        key.verify(raw, message)
    except InvalidSignature:
        return False
    return True


def load_private(path: Path) -> Ed25519PrivateKey:
    """Read a private key file written by `save_private` (one base64url line)."""
    return private_from_b64(path.read_text(encoding="ascii").strip())


def save_private(key: Signer, path: Path) -> None:
    """Write the key readable by its owner only; refuse to overwrite an existing key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "x", encoding="ascii") as fh:
        fh.write(private_to_b64(key) + "\n")
    path.chmod(0o600)
