"""Authentication and encryption of every membership message (UDP and TCP).

Why here and not in `membership/`: the sans-IO core produces and consumes
plain protocol bytes; who may speak to the cluster is a deployment concern
of the transport, as in memberlist (its `SecretKey`/`Keyring`).

A sealed frame is::

    mode (1 byte) | flags (1 byte) | [key id (4) | nonce (12)] | body | [HMAC tag (32)]

* mode 1 = plain body, mode 2 = AES-GCM body (ciphertext plus its 16-byte tag,
  the header as associated data, a random 12-byte nonce per message);
* flag bit 0 = an HMAC-SHA256 tag over everything before it follows, keyed
  from the cluster `secret`.  With a secret configured every message must
  carry a valid tag; without one, tagged messages are refused too (a member
  configured differently is not part of this cluster).
* The key id is the first 4 bytes of SHA-256(key): the receiver picks the
  key by id, so decryption costs one AES-GCM open whatever the keyring size.
  The first key of the keyring encrypts; every key decrypts, which is what
  makes rotation possible without downtime (docs/membership.md).

Nothing in `open()` raises anything but `Rejected`, whose `reason` is a short
counter name; the transport counts and drops.  There is no replay window (as
in memberlist): a replayed probe only earns an ack, and state messages are
ordered by incarnation, so a replayed one is stale.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections import Counter
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MODE_PLAIN = 1
MODE_AESGCM = 2
FLAG_HMAC = 1

HEADER = 2
KEY_ID = 4
NONCE = 12
GCM_TAG = 16
MAC = 32
MAX_OVERHEAD = HEADER + KEY_ID + NONCE + GCM_TAG + MAC
"""Bytes a sealed frame may add to the protocol payload (66)."""

REASONS = (
    "truncated",
    "oversized",
    "bad_mode",
    "unauthenticated",
    "unexpected_mac",
    "bad_mac",
    "not_encrypted",
    "unexpected_encryption",
    "unknown_key",
    "decrypt_failed",
    "malformed",
)
"""Every reason a message can be rejected for; these are the counter names."""


class Rejected(Exception):
    """A received frame is not acceptable; `reason` is one of REASONS."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_keys(spec: str | Sequence[str]) -> list[bytes]:
    """AES keys from the `encryption_keys` option: comma-separated base64,
    each 16, 24 or 32 bytes.  Raises ValueError naming the bad key."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    keys: list[bytes] = []
    for i, item in enumerate(k.strip() for k in items):
        if not item:
            continue
        try:
            key = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ValueError(f"encryption key #{i + 1} is not base64") from e
        if len(key) not in (16, 24, 32):
            raise ValueError(f"encryption key #{i + 1} is {len(key)} bytes; AES needs 16, 24 or 32")
        keys.append(key)
    return keys


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:KEY_ID]


class Sealer:
    """Seals outgoing and opens incoming frames; counts what it rejects."""

    def __init__(self, secret: str = "", keys: Sequence[bytes] = ()) -> None:
        self._mac_key = (
            hashlib.sha256(b"grid/member/gossip/hmac/v1\0" + secret.encode()).digest()
            if secret
            else None
        )
        self._keys = {key_id(k): AESGCM(k) for k in keys}
        self._primary = (key_id(keys[0]), AESGCM(keys[0])) if keys else None
        self.rejected: Counter[str] = Counter()

    @property
    def authenticated(self) -> bool:
        return self._mac_key is not None

    @property
    def encrypted(self) -> bool:
        return self._primary is not None

    def seal(self, payload: bytes) -> bytes:
        flags = FLAG_HMAC if self._mac_key is not None else 0
        if self._primary is not None:
            kid, aead = self._primary
            header = bytes((MODE_AESGCM, flags)) + kid
            nonce = os.urandom(NONCE)
            frame = header + nonce + aead.encrypt(nonce, payload, header)
        else:
            frame = bytes((MODE_PLAIN, flags)) + payload
        if self._mac_key is not None:
            frame += hmac.digest(self._mac_key, frame, "sha256")
        return frame

    def open(self, frame: bytes) -> bytes:
        """The payload of a sealed frame, or Rejected (and the reason counted)."""
        try:
            return self._open(frame)
        except Rejected as e:
            self.rejected[e.reason] += 1
            raise

    def count(self, reason: str) -> None:
        """Count a rejection decided elsewhere (the transport's size check, the decoder)."""
        self.rejected[reason] += 1

    def _open(self, frame: bytes) -> bytes:
        if len(frame) < HEADER:
            raise Rejected("truncated")
        mode, flags = frame[0], frame[1]
        if mode not in (MODE_PLAIN, MODE_AESGCM) or flags & ~FLAG_HMAC:
            raise Rejected("bad_mode")
        has_mac = bool(flags & FLAG_HMAC)
        if self._mac_key is not None:
            if not has_mac:
                raise Rejected("unauthenticated")
            if len(frame) < HEADER + MAC:
                raise Rejected("truncated")
            body, tag = frame[:-MAC], frame[-MAC:]
            if not hmac.compare_digest(hmac.digest(self._mac_key, body, "sha256"), tag):
                raise Rejected("bad_mac")
            frame = body
        elif has_mac:
            raise Rejected("unexpected_mac")
        if mode == MODE_PLAIN:
            if self._primary is not None:
                raise Rejected("not_encrypted")
            return frame[HEADER:]
        if self._primary is None:
            raise Rejected("unexpected_encryption")
        if len(frame) < HEADER + KEY_ID + NONCE + GCM_TAG:
            raise Rejected("truncated")
        header = frame[: HEADER + KEY_ID]
        aead = self._keys.get(header[HEADER:])
        if aead is None:
            raise Rejected("unknown_key")
        nonce = frame[HEADER + KEY_ID : HEADER + KEY_ID + NONCE]
        try:
            return aead.decrypt(nonce, frame[HEADER + KEY_ID + NONCE :], header)
        except InvalidTag:
            raise Rejected("decrypt_failed") from None
