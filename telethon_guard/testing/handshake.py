"""The server side of the MTProto auth-key exchange (https://core.telegram.org/mtproto/auth_key).

Three unencrypted round trips on one connection: ``req_pq_multi`` -> ``resPQ``,
``req_DH_params`` -> ``server_DH_params_ok``, ``set_client_DH_params`` -> ``dh_gen_ok``.
Telethon's client half is ``telethon.network.authenticator.do_authentication``; the objects
are Telethon's TL classes. On success the new auth key is handed to ``on_key``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from hashlib import sha1

import rsa
from telethon.crypto import AES, AuthKey
from telethon.crypto.rsa import get_byte_array
from telethon.extensions import BinaryReader
from telethon.helpers import generate_key_data_from_nonce
from telethon.tl import functions, types
from telethon.tl.tlobject import TLObject

from telethon_guard.testing import crypto


class HandshakeError(Exception):
    """The client broke the key exchange protocol (wrong nonce, bad hash, unknown key...)."""


class Handshake:
    """State of one key exchange on one connection."""

    def __init__(
        self,
        rsa_key: Callable[[], rsa.PrivateKey],
        pq: tuple[int, int],
        on_key: Callable[[bytes], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock``: the server's wall clock (Unix seconds) for ``server_time``, which Telethon
        takes its time offset from; a fault plan's clock skew moves it."""
        self._rsa_key = rsa_key
        self._clock = clock
        self._p, self._q = pq
        self._on_key = on_key
        self._nonce: int | None = None
        self._server_nonce: int | None = None
        self._new_nonce: int | None = None
        self._a: int | None = None
        self._tmp: tuple[bytes, bytes] | None = None

    async def handle(self, request: TLObject) -> TLObject:
        """Answer one unencrypted request; raise :class:`HandshakeError` on a protocol error."""
        if isinstance(request, (functions.ReqPqMultiRequest, functions.ReqPqRequest)):
            return await self._req_pq(request.nonce)
        if isinstance(request, functions.ReqDHParamsRequest):
            return self._req_dh_params(request)
        if isinstance(request, functions.SetClientDHParamsRequest):
            return self._set_client_dh_params(request)
        raise HandshakeError(f"unexpected unencrypted {type(request).__name__}")

    async def _req_pq(self, nonce: int) -> TLObject:
        # The key is generated once per process, off the event loop (it takes about a second).
        key = await asyncio.get_running_loop().run_in_executor(None, self._rsa_key)
        fp = crypto.register_public_key(key)
        self._nonce = nonce
        self._server_nonce = int.from_bytes(os.urandom(16), "little", signed=True)
        return types.ResPQ(
            nonce=nonce,
            server_nonce=self._server_nonce,
            pq=get_byte_array(self._p * self._q),
            server_public_key_fingerprints=[fp],
        )

    def _check_nonces(self, nonce: int, server_nonce: int) -> None:
        if self._nonce is None or nonce != self._nonce or server_nonce != self._server_nonce:
            raise HandshakeError("nonce / server_nonce mismatch")

    def _req_dh_params(self, req: functions.ReqDHParamsRequest) -> TLObject:
        self._check_nonces(req.nonce, req.server_nonce)
        key = self._rsa_key()
        if req.public_key_fingerprint != crypto.fingerprint(key):
            raise HandshakeError(f"unknown RSA fingerprint {req.public_key_fingerprint}")
        if int.from_bytes(req.p, "big") != self._p or int.from_bytes(req.q, "big") != self._q:
            raise HandshakeError("wrong p, q")
        try:
            payload = crypto.rsa_decrypt(key, req.encrypted_data)
        except ValueError as e:
            raise HandshakeError(str(e)) from e
        reader = BinaryReader(payload[20:])
        inner = reader.tgread_object()
        if not isinstance(inner, (types.PQInnerData, types.PQInnerDataDc)):
            raise HandshakeError(f"p_q_inner_data expected, got {type(inner).__name__}")
        if sha1(payload[20 : 20 + reader.tell_position()]).digest() != payload[:20]:
            raise HandshakeError("p_q_inner_data SHA1 mismatch")
        self._check_nonces(inner.nonce, inner.server_nonce)
        self._new_nonce = inner.new_nonce

        self._a, g_a = crypto.new_dh_secret()
        answer = bytes(
            types.ServerDHInnerData(
                nonce=inner.nonce,
                server_nonce=inner.server_nonce,
                g=crypto.DH_G,
                dh_prime=get_byte_array(crypto.DH_PRIME),
                g_a=get_byte_array(g_a),
                server_time=int(self._clock()),
            )
        )
        with_hash = sha1(answer).digest() + answer
        with_hash += os.urandom(-len(with_hash) % 16)
        self._tmp = generate_key_data_from_nonce(inner.server_nonce, inner.new_nonce)
        return types.ServerDHParamsOk(
            nonce=inner.nonce,
            server_nonce=inner.server_nonce,
            encrypted_answer=AES.encrypt_ige(with_hash, *self._tmp),
        )

    def _set_client_dh_params(self, req: functions.SetClientDHParamsRequest) -> TLObject:
        self._check_nonces(req.nonce, req.server_nonce)
        if self._tmp is None or self._a is None or self._new_nonce is None:
            raise HandshakeError("set_client_DH_params before req_DH_params")
        if len(req.encrypted_data) % 16:
            raise HandshakeError("encrypted_data is not a multiple of 16 bytes")
        plain = AES.decrypt_ige(req.encrypted_data, *self._tmp)
        reader = BinaryReader(plain[20:])
        inner = reader.tgread_object()
        if not isinstance(inner, types.ClientDHInnerData):
            raise HandshakeError(f"client_DH_inner_data expected, got {type(inner).__name__}")
        if sha1(plain[20 : 20 + reader.tell_position()]).digest() != plain[:20]:
            raise HandshakeError("client_DH_inner_data SHA1 mismatch")
        self._check_nonces(inner.nonce, inner.server_nonce)
        g_b = int.from_bytes(inner.g_b, "big")
        if not crypto.DH_SAFETY <= g_b <= crypto.DH_PRIME - crypto.DH_SAFETY:
            raise HandshakeError("g_b outside the safe range")
        # Same byte form as Telethon's authenticator (rsa.get_byte_array), so both key ids match.
        auth_key = get_byte_array(pow(g_b, self._a, crypto.DH_PRIME))
        new_nonce_hash1 = AuthKey(auth_key).calc_new_nonce_hash(self._new_nonce, 1)
        self._on_key(auth_key)
        nonce, server_nonce = req.nonce, req.server_nonce
        self._nonce = self._server_nonce = self._new_nonce = self._a = None
        self._tmp = None
        return types.DhGenOk(
            nonce=nonce, server_nonce=server_nonce, new_nonce_hash1=new_nonce_hash1
        )
