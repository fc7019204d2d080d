from __future__ import annotations

import random
from typing import Any

import pytest

from telethon_guard.config import (
    COMMUNITY_BOT_LIMITS,
    COMMUNITY_USER_LIMITS,
    TDLIB_RECONNECT_PACING,
    GuardConfig,
)
from telethon_guard.errors import GuardConfigError


def test_defaults_are_valid_and_documented_values() -> None:
    c = GuardConfig()
    assert c.deadline == 60.0
    assert c.max_flood_wait == 60.0
    assert c.breaker_failure_threshold == 5
    assert c.reconnect_pacing == TDLIB_RECONNECT_PACING == ((1, 1.0), (2, 4.0), (3, 8.0))
    assert c.observe_only is False
    assert c.rate_limits == ()


def test_presets_follow_tdlib_budgets() -> None:
    assert GuardConfig.for_user().deadline == 60.0
    bot = GuardConfig.for_bot()
    assert bot.deadline == 8.0
    assert GuardConfig.for_bot(deadline=3).deadline == 3.0


def test_community_presets_are_opt_in() -> None:
    u = GuardConfig.for_user(**COMMUNITY_USER_LIMITS)
    assert u.method_limits["messages.getHistory"] == ((30, 30.0),)
    assert u.peer_limits_private == ((1, 1.0),)
    assert u.peer_limits_group == ((20, 60.0),)
    b = GuardConfig.for_bot(**COMMUNITY_BOT_LIMITS)
    assert b.send_limits == ((30, 1.0),)
    assert GuardConfig.for_user().method_limits == {}


def test_windows_are_normalized() -> None:
    c = GuardConfig(rate_limits=[(200, 60), (10, 1)])
    assert c.rate_limits == ((10, 1.0), (200, 60.0))
    assert GuardConfig(rate_limits=(5, 1)).rate_limits == ((5, 1.0),)


def test_method_limits_are_read_only() -> None:
    c = GuardConfig(method_limits={"messages.getHistory": [(30, 30)]})
    with pytest.raises(TypeError):
        c.method_limits["x"] = ()  # type: ignore[index]


def test_on_event_accepts_a_single_callable() -> None:
    c = GuardConfig(on_event=print)
    assert c.on_event == (print,)


def test_rng_from_seed_is_reproducible() -> None:
    a = GuardConfig(seed=3).make_rng().random()
    b = GuardConfig(seed=3).make_rng().random()
    assert a == b
    r = random.Random(1)
    assert GuardConfig(rng=r).make_rng() is r


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("deadline", -1),
        ("deadline", 0),
        ("deadline", float("nan")),
        ("deadline", "60"),
        ("attempt_timeout", 0),
        ("max_flood_wait", -5),
        ("max_flood_wait", float("inf")),
        ("rate_limits", ((0, 1.0),)),
        ("rate_limits", ((5, 0),)),
        ("rate_limits", "10/s"),
        ("rate_limits", ((5,),)),
        ("send_limits", ((1.5, 1.0),)),
        ("method_limits", [("a", 1)]),
        ("breaker_failure_threshold", 0),
        ("breaker_open_seconds", 0),
        ("breaker_open_growth", 0.5),
        ("breaker_max_open_seconds", 1.0),
        ("retry_max_attempts", 0),
        ("retry_max_attempts", True),
        ("retry_base_delay", -0.1),
        ("retry_max_delay", 0.1),
        ("flood_max_retries", -1),
        ("observe_only", "yes"),
        ("pace_decay", 1.0),
        ("storage", "mysql://x"),
        ("storage", 42),
        ("storage_fallback", "ignore"),
        ("on_event", [1]),
        ("on_event", 5),
        ("reconnect_pacing", ((0, 1.0),)),
        ("seed", 1.5),
        ("rng", 3),
        ("account", "+15551234567"),
        ("account", ""),
        ("max_peer_keys", 0),
    ],
)
def test_bad_values_name_the_field(field: str, value: Any) -> None:
    with pytest.raises(GuardConfigError) as info:
        GuardConfig(**{field: value})
    assert info.value.field.startswith(field)
    assert isinstance(info.value, ValueError)


def test_unknown_setting_in_preset_or_replace() -> None:
    with pytest.raises(GuardConfigError) as info:
        GuardConfig.for_user(max_flod_wait=3)
    assert info.value.field == "max_flod_wait"
    with pytest.raises(GuardConfigError):
        GuardConfig().replace(nope=1)
    assert GuardConfig().replace(deadline=5).deadline == 5.0


def test_replace_validates_again() -> None:
    with pytest.raises(GuardConfigError):
        GuardConfig().replace(deadline=-3)


def test_field_names_lists_every_setting() -> None:
    names = GuardConfig.field_names()
    assert {"deadline", "max_flood_wait", "observe_only", "storage", "on_event"} <= names
