"""``TelegramTestServer`` rejects every bad constructor argument at construction, naming it."""

from __future__ import annotations

import re
from typing import Any

import pytest

from telethon_guard.testing.faults import FaultPlan
from telethon_guard.testing.server import TelegramTestServer
from telethon_guard.testing.world import World, WorldConfig

BAD: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"dcs": 0}, ValueError, "dcs"),
    ({"dcs": -1}, ValueError, "dcs"),
    ({"dcs": 10_000}, ValueError, "dcs"),
    ({"dcs": "2"}, TypeError, "dcs"),
    ({"dcs": True}, TypeError, "dcs"),
    ({"dcs": 2.0}, TypeError, "dcs"),
    ({"dcs": 2, "ports": [70000, 70001]}, ValueError, "ports[0]"),
    ({"dcs": 2, "ports": [0, -1]}, ValueError, "ports[1]"),
    ({"dcs": 2, "ports": [0]}, ValueError, "one entry per DC"),
    ({"dcs": 1, "ports": [0, 0]}, ValueError, "one entry per DC"),
    ({"dcs": 2, "ports": [4000, 4000]}, ValueError, "repeat"),
    ({"dcs": 2, "ports": ["1", 2]}, TypeError, "ports[0]"),
    ({"dcs": 1, "ports": [False]}, TypeError, "ports[0]"),
    ({"dcs": 1, "ports": 4000}, TypeError, "ports"),
    ({"dcs": 1, "ports": "4000"}, TypeError, "ports"),
    ({"host": 5}, TypeError, "host"),
    ({"host": None}, TypeError, "host"),
    ({"host": ""}, ValueError, "host"),
    ({"faults": "x"}, TypeError, "faults"),
    ({"faults": []}, TypeError, "faults"),
    ({"world_config": {"history_size": 5}}, TypeError, "world_config"),
    ({"world_config": WorldConfig(), "world": World()}, ValueError, "world_config"),
    ({"world": object()}, TypeError, "world"),
    ({"seed": "1"}, TypeError, "seed"),
    ({"seed": 1.5}, TypeError, "seed"),
    ({"strict": 1}, TypeError, "strict"),
    ({"strict": "no"}, TypeError, "strict"),
    ({"max_packet_size": 100}, ValueError, "max_packet_size"),
    ({"max_packet_size": 4096.0}, TypeError, "max_packet_size"),
    ({"rsa_key": 5}, TypeError, "rsa_key"),
    ({"rsa_key": "not a key"}, ValueError, "rsa_key"),
]


@pytest.mark.parametrize(("kwargs", "error", "name"), BAD,
                         # ids without object addresses: xdist workers must collect the same ids
                         ids=[re.sub(r" at 0x[0-9a-f]+", "", repr(k)) for k, _, _ in BAD])
def test_bad_argument_raises_naming_it(kwargs: dict[str, Any], error: type[Exception],
                                       name: str) -> None:
    with pytest.raises(error) as e:
        TelegramTestServer(**kwargs)
    assert name in str(e.value), str(e.value)


async def test_good_arguments_are_accepted_and_serve() -> None:
    server = TelegramTestServer(dcs=2, ports=(0, 0), host="127.0.0.1", seed=3, strict=True,
                                faults=FaultPlan(), world_config=WorldConfig(history_size=10),
                                max_packet_size=1024)
    async with server:
        assert [d.dc_id for d in server.dcs] == [1, 2]
        assert all(0 < d.port <= 65535 for d in server.dcs)
    assert TelegramTestServer(dcs=1, world=World()).world is not None


async def test_start_closes_bound_listeners_when_a_later_dc_cannot_bind() -> None:
    import socket

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = busy.getsockname()[1]
    try:
        server = TelegramTestServer(dcs=2, ports=[0, taken])
        with pytest.raises(OSError):
            await server.start()
        assert server.dcs == []
        assert server._servers == []  # DC 1's listener was closed, not leaked
    finally:
        busy.close()
