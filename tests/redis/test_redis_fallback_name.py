"""One public name for the fallback setting: ``storage_fallback``.

``GuardConfig.storage_fallback``, ``RedisStorage(storage_fallback=...)`` and
``?storage_fallback=`` in a URL name the same setting with the same values (``"local"`` /
``"fail"``); ``on_unavailable``, its former name on ``RedisStorage``, still works as a
deprecated alias. Construction only: no Redis server is contacted.
"""

from __future__ import annotations

from typing import Any

import pytest

from telethon_guard.config import GuardConfig
from telethon_guard.errors import GuardConfigError
from telethon_guard.pipeline import Pipeline
from telethon_guard.storage.redis import RedisStorage, from_url

URL = "redis://127.0.0.1:6379/0"


async def _policies(st: Any) -> tuple[str, str]:
    try:
        return st.storage_fallback, st.on_unavailable
    finally:
        await st.aclose()


async def test_storage_fallback_is_the_name_on_redis_storage() -> None:
    assert await _policies(RedisStorage(url=URL)) == ("local", "fallback")
    assert await _policies(RedisStorage(url=URL, storage_fallback="fail")) == ("fail", "fail")
    assert await _policies(RedisStorage(url=URL, storage_fallback="local")) == (
        "local", "fallback")


async def test_on_unavailable_is_a_deprecated_alias_that_still_works() -> None:
    with pytest.warns(DeprecationWarning, match="storage_fallback"):
        st = RedisStorage(url=URL, on_unavailable="fail")
    assert await _policies(st) == ("fail", "fail")
    with pytest.warns(DeprecationWarning):  # the same policy under both names is accepted
        st = RedisStorage(url=URL, storage_fallback="local", on_unavailable="fallback")
    assert await _policies(st) == ("local", "fallback")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(("kwargs", "field"), [
    ({"storage_fallback": "retry"}, "storage_fallback"),
    ({"on_unavailable": "retry"}, "on_unavailable"),
    ({"storage_fallback": "fail", "on_unavailable": "local"}, "storage_fallback"),
])
def test_bad_or_conflicting_values_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(GuardConfigError) as e:
        RedisStorage(url=URL, **kwargs)
    assert e.value.args[0].startswith(field)


async def test_url_and_guard_config_use_the_same_name() -> None:
    st = from_url(f"{URL}?storage_fallback=fail", storage_fallback="local")  # the URL wins
    assert await _policies(st) == ("fail", "fail")
    with pytest.warns(DeprecationWarning):
        st = from_url(f"{URL}?on_unavailable=fail", storage_fallback="local")  # alias in a URL
    with pytest.warns(DeprecationWarning):
        pass_through = from_url(URL, on_unavailable="fail")
    assert await _policies(st) == ("fail", "fail")
    assert await _policies(pass_through) == ("fail", "fail")
    for policy in ("local", "fail"):
        storage = Pipeline(GuardConfig(storage=URL, storage_fallback=policy)).storage
        assert isinstance(storage, RedisStorage)
        assert (await _policies(storage))[0] == policy
