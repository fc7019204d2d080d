"""The Telethon adapter (``telethon_guard._telethon``) against the installed Telethon.

* every private name the adapter lists exists in the installed Telethon (instance attributes
  on real, unconnected Telethon objects; methods on the classes), so a Telethon upgrade that
  renames one fails here, by name, instead of somewhere in a reconnect;
* no other module of the guard spells a Telethon private name outside the adapter's
  documented surface (an AST scan of the package), so the list is the whole story.

CI runs this file on the oldest and the newest Telethon ``pyproject.toml`` allows.
"""

from __future__ import annotations

import ast
import inspect
import tempfile
from pathlib import Path

import telethon
from telethon import TelegramClient, helpers
from telethon.extensions.messagepacker import MessagePacker
from telethon.network import MTProtoSender
from telethon.network.connection import ConnectionTcpFull
from telethon.network.connection.tcpfull import FullPacketCodec
from telethon.network.mtprotostate import MTProtoState
from telethon.sessions import SQLiteSession

from telethon_guard import _telethon as tl

PACKAGE = Path(tl.__file__).parent
API_ID, API_HASH = 1, "0" * 32


def _objects() -> dict[str, object]:
    client = TelegramClient(None, API_ID, API_HASH)
    loggers = tl.loggers(client)
    sender = MTProtoSender(None, loggers=loggers)
    packer = MessagePacker(MTProtoState(None, loggers=loggers), loggers=loggers)
    conn = ConnectionTcpFull("127.0.0.1", 443, 2, loggers=loggers)
    codec = FullPacketCodec(conn)
    return {"client": client, "sender": sender, "packer": packer, "conn": conn, "codec": codec,
            "session": SQLiteSession()}


def _has(obj: object, name: str) -> bool:
    return name in vars(obj) or any(name in vars(k) for k in type(obj).__mro__)


async def test_every_listed_name_exists_in_the_installed_telethon() -> None:
    objs = _objects()
    missing: list[str] = []
    checks = [
        ("client", tl.CLIENT_ATTRIBUTES),
        ("client", tl.CLIENT_METHODS),
        ("sender", tl.SENDER_ATTRIBUTES),
        ("sender", tl.SENDER_METHODS),
        ("packer", tl.PACKER_ATTRIBUTES),
        ("conn", tl.CONNECTION_ATTRIBUTES),
        ("codec", tl.CODEC_ATTRIBUTES),
        ("session", tl.SESSION_ATTRIBUTES),
    ]
    for what, names in checks:
        for name in names:
            if not _has(objs[what], name):
                missing.append(f"{what}.{name}")
    box = objs["client"]._message_box  # type: ignore[attr-defined]
    for name in tl.MESSAGE_BOX_ATTRIBUTES:  # __slots__: the names are on the class
        if not any(name in vars(k) for k in type(box).__mro__):
            missing.append(f"message_box.{name}")
    cache = objs["client"]._mb_entity_cache  # type: ignore[attr-defined]
    for name in tl.ENTITY_CACHE_ATTRIBUTES:
        if not _has(cache, name):
            missing.append(f"entity_cache.{name}")
    for dotted in tl.MODULE_FUNCTIONS:
        module, name = dotted.split(".")
        assert module == "helpers"
        if not callable(getattr(helpers, name, None)):
            missing.append(dotted)
    for name in tl.CLIENT_METHODS:
        if name in vars(objs["client"]):
            missing.append(f"client.{name} is an attribute, not a method")
    assert not missing, f"Telethon {telethon.__version__} lacks {missing}"
    installed = tuple(int(p) for p in telethon.__version__.split(".")[:2])
    assert installed >= tuple(int(p) for p in tl.TELETHON_FLOOR.split("."))
    # the overridden methods keep the signatures the guard's overrides assume
    assert list(inspect.signature(MTProtoSender._try_connect).parameters) == ["self", "attempt"]
    assert list(inspect.signature(MTProtoSender._keepalive_ping).parameters) == [
        "self", "rnd_id"]
    assert "flood_sleep_threshold" in inspect.signature(TelegramClient._call).parameters


async def test_disconnected_future_before_connect_is_done() -> None:
    """The surface reads Telethon's ``_disconnected`` property: a done future before connect."""
    client = TelegramClient(None, API_ID, API_HASH)
    sender = tl.SenderSurface(None, loggers=tl.loggers(client))
    fut = sender.disconnected_future()
    assert fut.done() and fut.result() is None
    assert sender._disconnected is fut


# ---- no Telethon private name outside the adapter ------------------------------------------

# Modules that never touch Telethon objects (own private names may coincide with Telethon's).
_NOT_TELETHON_FACING = ("testing", "bench", "metrics", "storage")


# (module, name): a private name that Telethon's objects have too, used there on something else
_NOT_TELETHON = {
    ("fakeclock.py", "_ready"): "the asyncio loop's ready queue (FakeClock), not MessagePacker's",
}


def _telethon_private_names() -> set[str]:
    names: set[str] = set()
    for obj in _objects().values():
        names.update(n for n in vars(obj) if n.startswith("_") and not n.startswith("__"))
        for klass in type(obj).__mro__:
            if klass.__module__.startswith("telethon"):
                names.update(n for n in vars(klass)
                             if n.startswith("_") and not n.startswith("__"))
    return names


def _surface() -> set[str]:
    return (set(tl.SENDER_ATTRIBUTES) | set(tl.SENDER_METHODS) | set(tl.PACKER_ATTRIBUTES)
            | set(tl.CODEC_ATTRIBUTES))


def _violations(path: Path, telethon_names: set[str]) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: list[str] = []

    class Scan(ast.NodeVisitor):
        def __init__(self) -> None:
            self.telethon_class: list[bool] = []

        def visit_ClassDef(self, node: ast.ClassDef) -> None:
            self.telethon_class.append(bool(node.bases))
            self.generic_visit(node)
            self.telethon_class.pop()

        def visit_Attribute(self, node: ast.Attribute) -> None:
            name = node.attr
            if name in telethon_names:
                on_self = (isinstance(node.value, ast.Name) and node.value.id == "self") or (
                    isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
                    and node.value.func.id == "super" and name in _surface())
                if (path.name, name) in _NOT_TELETHON:
                    pass
                elif not on_self:
                    out.append(f"{path.name}:{node.lineno} .{name}")
                elif (self.telethon_class and self.telethon_class[-1]
                      and name not in _surface() and _defined_by_telethon(name)):
                    out.append(f"{path.name}:{node.lineno} self.{name}")
            self.generic_visit(node)

        def visit_Call(self, node: ast.Call) -> None:
            if (isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr",
                                                                      "setattr")
                    and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                    and node.args[1].value in telethon_names):
                if (path.name, node.args[1].value) not in _NOT_TELETHON:
                    out.append(f"{path.name}:{node.lineno} {node.func.id}(..., "
                               f"{node.args[1].value!r})")
            self.generic_visit(node)

    Scan().visit(tree)
    return out


def _defined_by_telethon(name: str) -> bool:
    return any(name in vars(k) for k in (MTProtoSender, MessagePacker, FullPacketCodec)) or (
        name in tl.SENDER_ATTRIBUTES)


async def test_no_telethon_private_name_outside_the_adapter() -> None:
    # async: Telethon's objects want a running loop at construction (MTProtoSender futures)
    telethon_names = _telethon_private_names()
    # the guard's own attributes of the same name on its own (non-Telethon) objects
    violations: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.name == "_telethon.py" or rel.parts[0] in _NOT_TELETHON_FACING:
            continue
        violations.extend(_violations(path, telethon_names))
    assert not violations, "Telethon private names outside _telethon.py: " + ", ".join(
        violations)


async def test_scan_catches_a_private_name() -> None:
    """The scan is not vacuous: a module reading ``client._sender`` is reported."""
    names = _telethon_private_names()
    assert "_sender" in names and "_user_connected" in names
    src = "def f(client):\n    return client._sender, getattr(client, '_loop', None)\n"
    with tempfile.TemporaryDirectory() as d:
        sample = Path(d) / "sample.py"
        sample.write_text(src)
        found = _violations(sample, names)
    assert len(found) == 2, found
