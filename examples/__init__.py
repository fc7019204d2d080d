"""Runnable examples of telethon-guard (``python -m examples.fastapi_service``)."""
