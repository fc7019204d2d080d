"""Server-side MTProto 2.0 cryptography: message keys, the server's RSA key, DH parameters.

The AES-256-IGE itself is Telethon's (:class:`telethon.crypto.AES`, which uses ``cryptg`` when
installed). What is written here is the server's half of the key derivation described in
https://core.telegram.org/mtproto/description#defining-aes-key-and-initialization-vector :

* ``msg_key_large = SHA256(substr(auth_key, 88 + x, 32) + plaintext + padding)``;
  ``msg_key = msg_key_large[8:24]``; ``x = 0`` for client -> server, ``x = 8`` for server -> client;
* ``sha256_a = SHA256(msg_key + substr(auth_key, x, 36))``,
  ``sha256_b = SHA256(substr(auth_key, 40 + x, 36) + msg_key)``;
* ``aes_key = a[0:8] + b[8:24] + a[24:32]``, ``aes_iv = b[0:8] + a[8:24] + b[24:32]``;
* padding is 12..1024 random bytes making the total a multiple of 16.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import tempfile
import threading
from hashlib import sha1

import rsa
import rsa.core
import rsa.prime
from telethon.crypto import AES
from telethon.crypto import rsa as telethon_rsa

_sha256 = hashlib.sha256
_urandom = os.urandom
_encrypt_ige = AES.encrypt_ige
_decrypt_ige = AES.decrypt_ige
_pack_q = struct.Struct("<Q").pack


class DecryptError(Exception):
    """An encrypted message failed the msg_key / length checks."""


class KeyMaterial:
    """The slices of one auth key the server uses for every message, computed once."""

    __slots__ = ("_in_a", "_in_b", "_in_mk", "_out_a", "_out_b", "_out_mk", "key_id", "prefix")

    def __init__(self, auth_key: bytes, key_id: int) -> None:
        self.key_id = key_id
        self.prefix = _pack_q(key_id)
        # client -> server, x = 0
        self._in_mk = auth_key[88:120]
        self._in_a = auth_key[0:36]
        self._in_b = auth_key[40:76]
        # server -> client, x = 8
        self._out_mk = auth_key[96:128]
        self._out_a = auth_key[8:44]
        self._out_b = auth_key[48:84]

    def decrypt(self, packet: bytes) -> bytes:
        """Decrypt a client packet (``key_id msg_key ciphertext``) and check its msg_key.

        Returns the plaintext (salt, session_id, msg_id, seqno, length, body, padding).
        Raises :class:`DecryptError` when the msg_key does not match or sizes are wrong.
        """
        cipher = packet[24:]
        if not cipher or len(cipher) % 16:
            raise DecryptError(f"ciphertext of {len(cipher)} bytes is not a multiple of 16")
        msg_key = packet[8:24]
        a = _sha256(msg_key + self._in_a).digest()
        b = _sha256(self._in_b + msg_key).digest()
        plain: bytes = _decrypt_ige(cipher, a[:8] + b[8:24] + a[24:32], b[:8] + a[8:24] + b[24:32])
        if _sha256(self._in_mk + plain).digest()[8:24] != msg_key:
            raise DecryptError("msg_key mismatch")
        return plain

    def encrypt(self, plain: bytes) -> bytes:
        """Pad and encrypt a server message (salt, session_id, msg_id, seqno, length, body)."""
        padding = _urandom(-(len(plain) + 12) % 16 + 12)
        msg_key = _sha256(self._out_mk + plain + padding).digest()[8:24]
        a = _sha256(msg_key + self._out_a).digest()
        b = _sha256(self._out_b + msg_key).digest()
        cipher: bytes = _encrypt_ige(
            plain + padding, a[:8] + b[8:24] + a[24:32], b[:8] + a[8:24] + b[24:32]
        )
        return self.prefix + msg_key + cipher


def auth_key_id(auth_key: bytes) -> int:
    """The 64 lower-order bits of SHA1(auth_key), as Telethon's ``AuthKey.key_id`` (unsigned)."""
    return int(struct.unpack("<Q", sha1(auth_key).digest()[12:20])[0])


# ---- RSA ------------------------------------------------------------------------------------

_rsa_lock = threading.Lock()
_process_key: rsa.PrivateKey | None = None
_registered: set[int] = set()


RSA_CACHE_ENV = "TELETHON_GUARD_TEST_RSA_KEY"
"""Environment variable naming the PEM file that caches the test RSA key ("" disables)."""


def _cache_path() -> str | None:
    path = os.environ.get(RSA_CACHE_ENV)
    if path is None:
        path = os.path.join(tempfile.gettempdir(), f"telethon_guard_test_rsa_{os.getuid()}.pem")
    return path or None


def _generate_rsa_key() -> rsa.PrivateKey:
    """A new 2048-bit key: through ``cryptography`` when installed (milliseconds), else the
    pure-Python ``rsa`` package Telethon depends on (seconds, very variable)."""
    try:
        from cryptography.hazmat.primitives.asymmetric import rsa as c_rsa
    except ImportError:
        return rsa.newkeys(2048)[1]
    nums = c_rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers()
    pub = nums.public_numbers
    return rsa.PrivateKey(pub.n, pub.e, nums.d, nums.p, nums.q)


def server_rsa_key() -> rsa.PrivateKey:
    """This process's server RSA key (2048 bits), made on first use.

    Loaded from a PEM cache file (``$TELETHON_GUARD_TEST_RSA_KEY``, default a per-user file in
    the temp directory) when present, else generated and cached there. It is a test key only.
    """
    global _process_key
    with _rsa_lock:
        if _process_key is not None:
            return _process_key
        path = _cache_path()
        if path is not None:
            with contextlib.suppress(Exception):  # missing or corrupt cache: regenerate
                with open(path, "rb") as f:
                    _process_key = rsa.PrivateKey.load_pkcs1(f.read())
        if _process_key is None:
            _process_key = _generate_rsa_key()
            if path is not None:
                with contextlib.suppress(OSError):
                    tmp = f"{path}.{os.getpid()}.tmp"
                    with open(tmp, "wb") as f:
                        f.write(_process_key.save_pkcs1())
                    os.chmod(tmp, 0o600)
                    os.replace(tmp, path)
        return _process_key


def load_rsa_key(key: rsa.PrivateKey | bytes | str) -> rsa.PrivateKey:
    """Accept an ``rsa.PrivateKey`` or a PKCS#1 PEM private key; raise ``ValueError`` otherwise."""
    if isinstance(key, rsa.PrivateKey):
        return key
    if isinstance(key, str):
        key = key.encode()
    if isinstance(key, bytes):
        try:
            return rsa.PrivateKey.load_pkcs1(key)
        except Exception as e:
            raise ValueError(f"rsa_key is not a PKCS#1 PEM private key: {e}") from e
    raise ValueError(f"rsa_key must be rsa.PrivateKey or PEM bytes/str, got {type(key).__name__}")


def public_pem(key: rsa.PrivateKey) -> str:
    """PKCS#1 PEM of the public half (what clients pass to ``telethon.crypto.rsa.add_key``)."""
    return rsa.PublicKey(key.n, key.e).save_pkcs1().decode()


def fingerprint(key: rsa.PrivateKey) -> int:
    """Telegram's fingerprint of the key (signed 64-bit), as Telethon computes it."""
    return int(telethon_rsa._compute_fingerprint(rsa.PublicKey(key.n, key.e)))


def register_public_key(key: rsa.PrivateKey | str) -> int:
    """Make Telethon in this process trust the key (``telethon.crypto.rsa.add_key``).

    Accepts the private key or a public PEM. Returns the fingerprint. Idempotent.
    """
    if isinstance(key, str):
        pub = rsa.PublicKey.load_pkcs1(key.encode())
        fp = int(telethon_rsa._compute_fingerprint(pub))
        pem = key
    else:
        fp = fingerprint(key)
        pem = public_pem(key)
    with _rsa_lock:
        if fp not in _registered:
            telethon_rsa.add_key(pem, old=False)
            _registered.add(fp)
    return fp


def rsa_decrypt(key: rsa.PrivateKey, data: bytes) -> bytes:
    """Raw RSA decryption of Telethon's 256-byte block into its 255 payload bytes."""
    if len(data) != 256:
        raise ValueError(f"RSA block must be 256 bytes, got {len(data)}")
    value = rsa.core.decrypt_int(int.from_bytes(data, "big"), key.d, key.n)
    if value.bit_length() > 255 * 8:
        raise ValueError("RSA payload too long")
    return int(value).to_bytes(255, "big")


# ---- Diffie-Hellman -------------------------------------------------------------------------

DH_G = 3
"""Generator sent in server_DH_inner_data (Telegram uses 2, 3, 4, 5, 6 or 7)."""

DH_PRIME = int(
    "c71caeb9c6b1c9048e6c522f70f13f73980d40238e3e21c14934d037563d930f"
    "48198a0aa7c14058229493d22530f4dbfa336f6e0ac925139543aed44cce7c37"
    "20fd51f69458705ac68cd4fe6b6b13abdc9746512969328454f18faf8c595f64"
    "2477fe96bb2a941d5bcd1d4ac8cc49880708fa9b378e3c4f3a9060bee67cf9a4"
    "a4a695811051907e162753b56b0f6b410dba74d8a84b2a14b3144e0ef1284754"
    "fd17ed950d5965b4b9dd46582db1178d169c6bc465b0d6ff9ca3928fef5b9ae4"
    "e418fc15e83ebea0f87fa9ff5eed70050ded2849f47bf959d956850ce929851f"
    "0d8115f635b105ee2e4e15d04b2454bf6f4fadf034b10403119cd8e3b92fcc5b",
    16,
)
"""The 2048-bit safe prime Telegram sends (https://core.telegram.org/mtproto/security_guidelines)."""

DH_SAFETY = 2 ** (2048 - 64)


def new_dh_secret() -> tuple[int, int]:
    """A random secret ``a`` and ``g_a = g^a mod dh_prime`` inside the range Telethon checks."""
    while True:
        a = int.from_bytes(_urandom(256), "big")
        g_a = pow(DH_G, a, DH_PRIME)
        if DH_SAFETY <= g_a <= DH_PRIME - DH_SAFETY:
            return a, g_a


def small_pq() -> tuple[int, int]:
    """Two distinct 31-bit primes (p < q); ``p * q`` is the ``pq`` of res_pq."""
    while True:
        p = rsa.prime.getprime(31)
        q = rsa.prime.getprime(31)
        if p != q:
            return (p, q) if p < q else (q, p)
