"""The agent's Ed25519 key, signed with libsodium (PyNaCl) rather than `cryptography`.

Memory: importing `cryptography` maps its statically linked OpenSSL, ~7 MB of resident memory
on top of the system OpenSSL that `ssl` and `hashlib` already load; PyNaCl costs ~2 MB
(bench/RESULTS.md, "Agent footprint"). Ed25519 signatures are deterministic (RFC 8032), so a key
signs the same bytes here as with `cryptography` (tests/agent/test_signer.py); the key file is the
same one base64url line (protocols/signing.py).

Only PyNaCl's Ed25519 binding (`nacl.bindings.crypto_sign`, the functions `nacl.signing.SigningKey`
calls) is imported: `nacl.signing` and the `nacl.bindings` package's `__init__` import every binding
(box, AEAD, pwhash, secretstream, ...), ~0.37 MB the agent never uses (agent/lean.py `package_on_demand`).
The `__init__`'s one action, `sodium_init()`, is done here.
"""

from __future__ import annotations

import os
from pathlib import Path

from agent import lean
from protocols.signing import b64d, save_private

lean.package_on_demand("nacl.bindings")
from nacl.bindings.crypto_sign import (  # noqa: E402
    crypto_sign,
    crypto_sign_BYTES,
    crypto_sign_open,
    crypto_sign_PUBLICKEYBYTES,
    crypto_sign_seed_keypair,
)
from nacl.bindings.sodium_core import sodium_init  # noqa: E402
from nacl.exceptions import ValueError as NaclValueError  # noqa: E402

sodium_init()

SEED_BYTES = 32


class RawPublic:
    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def public_bytes_raw(self) -> bytes:
        return self.raw


class AgentKey:
    """An Ed25519 private key (a `protocols.signing.Signer`)."""

    __slots__ = ("_public", "_secret", "_seed")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"an Ed25519 private key is {SEED_BYTES} bytes, got {len(seed)}")
        public, self._secret = crypto_sign_seed_keypair(seed)  # as nacl.signing.SigningKey(seed)
        self._seed = seed
        self._public = RawPublic(public)

    @classmethod
    def generate(cls) -> AgentKey:
        return cls(os.urandom(SEED_BYTES))  # as nacl.signing.SigningKey.generate (nacl.utils.random)

    def sign(self, data: bytes, /) -> bytes:
        return crypto_sign(data, self._secret)[:crypto_sign_BYTES]  # as SigningKey.sign(...).signature

    def public_key(self) -> RawPublic:
        return self._public

    def private_bytes_raw(self) -> bytes:
        return self._seed


class VerifyKey:
    """An Ed25519 public key (the server's, for its session commands: agent/identity/remote.py), checked
    as `nacl.signing.VerifyKey` checks it, through the same binding."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != crypto_sign_PUBLICKEYBYTES:
            raise NaclValueError(f"The key must be exactly {crypto_sign_PUBLICKEYBYTES} bytes long")
        self._key = key

    def verify(self, message: bytes, signature: bytes) -> bytes:
        """`message` if `signature` is the key's over it; raises nacl.exceptions.BadSignatureError."""
        return crypto_sign_open(signature + message, self._key)


def load_key(path: Path) -> AgentKey:
    """Read a key file written by `save_key` or `protocols.signing.save_private` (one base64url line)."""
    return AgentKey(b64d(path.read_text(encoding="ascii").strip()))


def save_key(key: AgentKey, path: Path) -> None:
    """Write the key readable by its owner only; refuse to overwrite an existing key."""
    save_private(key, path)
