"""The FastAPI example service: see :mod:`examples.fastapi_service.app`."""

from .app import DEFAULT_CHANNELS, ChannelCache, ChannelService, create_app

__all__ = ["DEFAULT_CHANNELS", "ChannelCache", "ChannelService", "create_app"]
