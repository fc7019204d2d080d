"""ServerLog refuses filters that can never match (a typo would make a check pass vacuously)."""

import pytest

from telethon_guard.testing.log import ServerLog


def test_unknown_method_or_outcome_is_refused_and_known_ones_count() -> None:
    log = ServerLog()
    assert log.count("messages.getHistory") == 0  # a real TL name, not logged yet: fine
    assert log.max_in_window("messages.sendMessage", 1.0) == 0
    with pytest.raises(ValueError, match=r"messages\.nope"):
        log.count("messages.nope")
    with pytest.raises(ValueError, match=r"messages\.GetHistory"):
        log.max_in_window("messages.GetHistory", 2.0)
    with pytest.raises(ValueError, match="nonsense"):
        log.count("messages.getHistory", outcome="nonsense")  # type: ignore[arg-type]
