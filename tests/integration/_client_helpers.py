"""Helpers shared by tests/integration/test_client_*.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from telethon_guard.call import CallInfo

T = TypeVar("T")

BOUND = 20.0
"""Upper bound (seconds) of any single wait in these tests."""

AT_ONCE = 5.0
"""Upper bound (seconds) of "at once" in these tests: far below every wait a test shows being
avoided (a FLOOD_WAIT of 22 s and more, 60 s of slow mode, a 10 s deadline), and far above
what a busy shared machine adds to a few local round trips. Where the avoided wait is
shorter, tests prove "no wait" from the server log or the guard's events instead."""

TEST_RSA_KEY = """\
-----BEGIN RSA PRIVATE KEY-----
MIIEoQIBAAKCAQEA6A0fpIQ0ZMgJ9PJu89X/3M2tHnSADahRIenmMj6HAtEOE/7J
h0I9ZUEiSF42CqTBiidJZkPFh+mb/y7v0LHR++idLLV1XurwGjY/vgMpFndynPkv
otuak1DFTOLoFGkj381lgg8X23o8Srhn03L036Rut1b75jXIcViPZB4bopC5mE5e
Lc7x/mDKEIyvFtgyHh+JXeBxpBYrVe2Mwn/b5IgeAp3XE7qeqlEIHhUhRaD0kfl3
t7NF+XDHpURt7zOUjBt9+9P1c40F0cZ9ATamB3z0RekGm3trsWCEgGIDET766QAG
SDr00UAIwg3LMDfFch3p2TR0kYyeDAGqp0tWDQIDAQABAoH/EBbY2s9P0q0MA6/L
gZyU4PphxnrNZiUFexR8oX80XT2hfEFuN7KgDyU0+0+M76/8u1d9/1kzmPjZmBfp
CM9Lf+vg+fia6rnfa/HW+ZW+g5BEoh2k7+XKEezHwUz6Sm//zMSxBROG0/DlvUiL
6l1OHTOJeazOSmfwPeumBYsQ33SHnEMG087MezP4Gv3VGrzzrxtHsPcbMnTOnrlu
MgOjUAAtYeZklAFxHgjNRIQOiaq6C0RCIXEhXIp+rUzSAxUiuj/Yznnogad3ojJD
WifMt66MMmAYf5KqK2cuZ21qYGTi50bx736xjHjSXFgneSv+TaksDIKq6TkHAQQa
Zl7hAoGBAPeMd4Eymsa0QuegLQ2b0YNeu+nB2sdw2E8xpQGTuYC0mILoNH3TPAN8
GCDxmBWyV5reopNpxv+BHYc1a1kFvK+M9vCAbbUhqwm1Eenrk549yrBnepaY78/r
HFbzMSpbVm8oFMWUzJEpzE0wVdEz7LBxLsCtIC1utpAgCWr2o0phAoGBAO/5Nj0M
A3oMy6uC9/ahq7qwH6KGdMEZGb4yQJrDZ2iA3bmiT76Gdxs1xrBWx7CpTL841/Ca
W+RZAmT0m9MdV+tXVfU9DJ5Q+5o3MKgEyICbFwEc1mNorVAqPx5OU+Za6Fwx8Qsn
rW3Xizwt+Kmvem+Ag1igbubquhkTAYVo7CMtAoGADro5peMX2DiDPnqGE6gwh8tM
DLUuyezJwbRnZ7edMq4L4MXl0ZKOoHpyiQs2jBvnIFyceX6yiyLoWdHwyAQSXLNb
QaWyYTNWlKZEIZGVX7W3aFVPssP4iHspXXbsduOmOci9q5+VqBE/iVwVzvNy4nBp
YqcqIenTTLHLPaTcxCECgYEAzIG6il3xnJLJA3pSrVlsC2ZLH2usll84xBD5Y6sB
NlsUGj5L7VeUq5ixodfiyBgPsqrTxFUX2MtOMhEPtuO76HD+bUfAuC7VrMA59AZX
hNomyaj0v7UWdkn6jm48LATvHprlDBedQg29t+SJlLpaAiooRWA8Awio3fOHiVU4
YGUCgYB2vwdu+1zfcb+a4TZ1WiZesETz7STkEb4hhLzSH/dK9NrAeZBooxNdan9K
K4kFKMK5Ym3vD9nNmvLwdGgCRVvNIacLiiFQJYoy+hT44K71gwRScdDyrefCdWuV
m1GxQVDaBVjmt0gXSljsfLKHId+8M1n9nAiANOmDMW+dLChBGw==
-----END RSA PRIVATE KEY-----
"""
"""A fixed 2048-bit RSA key for the test server (test-only, generated for this suite): saves
the 1-20 s of ``rsa.newkeys(2048)`` on the first DH exchange (exported DC senders)."""


async def bounded(aw: Awaitable[T], seconds: float = BOUND) -> T:
    """``asyncio.wait_for`` with the suite's bound."""
    return await asyncio.wait_for(aw, seconds)


class InvokeRecorder:
    """Records every ``CallInfo`` passed to a pipeline's ``invoke`` (and still calls it).

    Observes our own pipeline, not Telethon: proves a request went through the guard. The
    straight lane (telethon_guard/lane.py) makes no ``CallInfo`` for a call that succeeds at
    once, so it is switched off while recording: every call then runs through ``invoke``
    (tests/guard/test_guard_lane.py shows the lane gives what ``invoke`` gives).
    """

    def __init__(self, pipeline: Any) -> None:
        self.calls: list[CallInfo] = []
        self._pipeline = pipeline
        self._original = pipeline.invoke
        self._lane = pipeline.lane
        pipeline.lane = None

        async def invoke(call: CallInfo, send: Callable[[], Awaitable[Any]]) -> Any:
            self.calls.append(call)
            return await self._original(call, send)

        pipeline.invoke = invoke

    def methods(self) -> list[str]:
        return [c.method for c in self.calls]

    def of(self, method: str) -> list[CallInfo]:
        return [c for c in self.calls if c.method == method]

    def close(self) -> None:
        self._pipeline.invoke = self._original
        self._pipeline.lane = self._lane


async def wait_until(predicate: Callable[[], bool], timeout: float = BOUND,
                     interval: float = 0.005) -> None:
    """Poll ``predicate`` (e.g. a server-log count) until true; ``TimeoutError`` after
    ``timeout`` seconds."""
    async def poll() -> None:
        while not predicate():  # noqa: ASYNC110 - the server log has no change event
            await asyncio.sleep(interval)

    await asyncio.wait_for(poll(), timeout)


def measured(scenario: str, **figures: object) -> None:
    """Print the figures a scenario measured (visible with ``pytest -s``; for the notes)."""
    parts = " ".join(
        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    print(f"MEASURED {scenario}: {parts}")
