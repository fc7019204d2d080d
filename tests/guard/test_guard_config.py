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
    assert c.rate_margin == 0.05 and c.pace_relax == 5.0 and c.adaptive_pacing is True
    # the margin is not folded into the configured windows (the limiter adds it)
    assert GuardConfig(rate_limits=((20, 1.0),)).rate_limits == ((20, 1.0),)


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
        ("pace_relax", 0.0),
        ("pace_relax", -1.0),
        ("rate_margin", -0.01),
        ("rate_margin", float("nan")),
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


# ---- reconnect settings (TDLib ConnectionCreator) ------------------------------------------


def test_reconnect_defaults_match_the_sender_and_pacer_defaults() -> None:
    import inspect

    from telethon_guard.reconnect import ReconnectPacer
    from telethon_guard.sender import GuardedMTProtoSender

    c = GuardConfig()
    assert (c.reconnect_backoff_base, c.reconnect_backoff_cap, c.reconnect_jitter) == (
        1.0, 16.0, 0.25)
    assert c.max_reconnect_seconds == 60.0
    pacer = inspect.signature(ReconnectPacer.__init__).parameters
    assert pacer["backoff_base"].default == c.reconnect_backoff_base
    assert pacer["backoff_cap"].default == c.reconnect_backoff_cap
    assert pacer["jitter"].default == c.reconnect_jitter
    sender = inspect.signature(GuardedMTProtoSender.__init__).parameters
    assert sender["max_reconnect_seconds"].default == c.max_reconnect_seconds


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("reconnect_backoff_base", 0),
        ("reconnect_backoff_base", -1.0),
        ("reconnect_backoff_base", float("nan")),
        ("reconnect_backoff_base", "1"),
        ("reconnect_backoff_cap", 0),
        ("reconnect_backoff_cap", float("inf")),
        ("reconnect_jitter", -0.1),
        ("reconnect_jitter", 1.5),
        ("reconnect_jitter", True),
        ("max_reconnect_seconds", 0),
        ("max_reconnect_seconds", -5),
        ("max_reconnect_seconds", float("inf")),
        ("max_reconnect_seconds", "60"),
    ],
)
def test_bad_reconnect_settings_name_the_field(field: str, value: Any) -> None:
    with pytest.raises(GuardConfigError) as info:
        GuardConfig(**{field: value})
    assert info.value.field == field


def test_reconnect_backoff_cap_below_base_is_refused() -> None:
    with pytest.raises(GuardConfigError) as info:
        GuardConfig(reconnect_backoff_base=4.0, reconnect_backoff_cap=2.0)
    assert info.value.field == "reconnect_backoff_cap"
    c = GuardConfig(reconnect_backoff_base=2, reconnect_backoff_cap=2, reconnect_jitter=0,
                    max_reconnect_seconds=None)
    assert (c.reconnect_backoff_base, c.reconnect_backoff_cap, c.reconnect_jitter) == (
        2.0, 2.0, 0.0)
    assert c.max_reconnect_seconds is None
    assert GuardConfig(reconnect_jitter=1).reconnect_jitter == 1.0


def test_reconnect_settings_reach_the_clients_sender_and_pacer() -> None:
    from telethon.sessions import StringSession

    from telethon_guard.client import GuardedTelegramClient
    from telethon_guard.sender import GuardedMTProtoSender

    client = GuardedTelegramClient(
        StringSession(), 1, "x", max_reconnect_seconds=5, reconnect_backoff_base=0.5,
        reconnect_backoff_cap=4, reconnect_jitter=0.0, reconnect_pacing=((1, 0.5), (2, 2.0)))
    sender = client._sender
    assert isinstance(sender, GuardedMTProtoSender)
    assert sender._max_reconnect == 5.0
    pacer = sender.pacer
    assert pacer._windows == ((1, 0.5), (2, 2.0))
    assert (pacer._backoff_base, pacer._backoff_cap, pacer._jitter) == (0.5, 4.0, 0.0)
    # jitter 0: the backoff after each consecutive failure is exactly base * 2**(n-1), capped
    assert [pacer.record_failure() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]

    default = GuardedTelegramClient(StringSession(), 1, "x")._sender
    assert isinstance(default, GuardedMTProtoSender)
    assert default._max_reconnect == 60.0
    assert (default.pacer._backoff_base, default.pacer._backoff_cap,
            default.pacer._jitter) == (1.0, 16.0, 0.25)
    never = GuardedTelegramClient(StringSession(), 1, "x", max_reconnect_seconds=None)._sender
    assert isinstance(never, GuardedMTProtoSender)
    assert never._max_reconnect is None


def test_bad_reconnect_setting_fails_at_client_construction() -> None:
    from telethon.sessions import StringSession

    from telethon_guard.client import GuardedTelegramClient

    with pytest.raises(GuardConfigError) as info:
        GuardedTelegramClient(StringSession(), 1, "x", reconnect_jitter=2)
    assert info.value.field == "reconnect_jitter"


@pytest.mark.parametrize("name", ["messages.GetHistory", "GetHistoryRequest", "getHistory"])
def test_method_limits_reject_unknown_tl_method_names(name: str) -> None:
    # A misspelt method would never match a request and silently not apply.
    with pytest.raises(GuardConfigError) as info:
        GuardConfig(method_limits={name: ((30, 30.0),)})
    assert info.value.field == "method_limits" and "messages.getHistory" in str(info.value)


@pytest.mark.parametrize("field", ["rate_limits", "send_limits", "reconnect_pacing"])
@pytest.mark.parametrize("value", ["10/s", "fast", b"10", ["10"], [(1, 1.0), "25"]])
def test_a_string_is_refused_as_windows_showing_the_expected_shape(field: str,
                                                                    value: Any) -> None:
    # A str is iterable: read char by char it gave "got '1'" / "got 'f'".
    with pytest.raises(GuardConfigError) as info:
        GuardConfig(**{field: value})
    assert info.value.field == field
    assert "(count, period)" in str(info.value) and repr(value if isinstance(value, (str, bytes))
                                                         else value[-1]) in str(info.value)


def test_a_string_is_refused_as_method_windows() -> None:
    with pytest.raises(GuardConfigError, match=r"\(count, period\).*'10/s'"):
        GuardConfig(method_limits={"messages.getHistory": "10/s"})
