"""The proto build: generates importable, relocatable code, idempotently, with the original wire numbers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fishchat.proto import build as proto_build

# Field name -> (number, type) of every original message (FishChatServer2 protocol/external/*.proto).
HEADER = {"cmd": (1, "uint32"), "cmdStr": (2, "string")}
REPLY = {**HEADER, "errCode": (3, "uint32"), "errStr": (4, "string")}
ORIGINAL: dict[str, dict[str, tuple[int, str]]] = {
    "Base": {"cmd": (1, "uint32")},
    "Error": {"cmd": (1, "uint32"), "errCode": (2, "uint32"), "errStr": (3, "string")},
    "ReqAccessServer": HEADER,
    "ResSelectAccessServerForClient": {**REPLY, "addr": (5, "string")},
    "ReqLogin": {**HEADER, "UID": (3, "int64"), "token": (4, "string")},
    "ResLogin": REPLY,
    "ReqLogout": {**HEADER, "UID": (3, "int64")},
    "ResLogout": REPLY,
    "ReqPing": {**HEADER, "UID": (3, "int64")},
    "ReqSendP2PMsg": {
        **HEADER,
        "sourceUID": (3, "int64"),
        "targetUID": (4, "int64"),
        "msgID": (5, "string"),
        "msg": (6, "string"),
    },
    "ResSendP2PMsg": {
        **REPLY,
        "sourceUID": (5, "int64"),
        "targetUID": (6, "int64"),
        "msgID": (7, "string"),
        "msg": (8, "string"),
    },
    "ResNotify": {**REPLY, "currentID": (5, "int64")},
    "ReqSyncMsg": {**HEADER, "UID": (3, "int64"), "currentID": (4, "int64")},
    "offsetMsg": {
        "sourceUID": (1, "int64"),
        "targetUID": (2, "int64"),
        "groupID": (3, "int64"),
        "msgType": (4, "string"),
        "msgID": (5, "string"),
        "msg": (6, "string"),
    },
    "ResSyncMsg": {**REPLY, "currentID": (5, "int64"), "Msgs": (6, "repeated external.offsetMsg")},
    "ReqAcceptP2PMsgAck": {
        **HEADER,
        "sourceUID": (3, "int64"),
        "targetUID": (4, "int64"),
        "msgID": (5, "string"),
    },
    "ResAcceptP2PMsgAck": REPLY,
    "ReqSendGroupMsg": {
        **HEADER,
        "sourceUID": (3, "int64"),
        "groupID": (4, "int64"),
        "msgID": (5, "string"),
        "msg": (6, "string"),
    },
    "ResSendGroupMsg": REPLY,
}
# FishChat's additions, pinned so that nobody renumbers them once clients use them.
ADDED: dict[str, dict[str, tuple[int, str]]] = {
    "ReqLogin": {"device": (5, "string")},
    "ResSendP2PMsg": {"version": (9, "int64"), "serverMsgID": (10, "uint64"), "timestamp": (11, "int64")},
    "ResSendGroupMsg": {
        "sourceUID": (5, "int64"),
        "groupID": (6, "int64"),
        "msgID": (7, "string"),
        "version": (9, "int64"),
        "serverMsgID": (10, "uint64"),
        "timestamp": (11, "int64"),
    },
    "ReqSyncMsg": {"limit": (5, "uint32"), "receipts": (6, "bool")},
    "offsetMsg": {
        "version": (7, "int64"),
        "timestamp": (8, "int64"),
        "serverMsgID": (9, "uint64"),
        "markVersion": (11, "int64"),
        "markServerMsgID": (12, "uint64"),
    },
    "ResSyncMsg": {"more": (7, "bool")},
    "ResSelectAccessServerForClient": {"wsURL": (6, "string")},
    "ResReconnect": {
        **REPLY,
        "reason": (5, "string"),
        "addr": (6, "string"),
        "retryAfterMs": (7, "uint32"),
    },
}
SERVICES = {
    "LogicRPC": {
        "Login",
        "Ping",
        "PingMany",
        "Logout",
        "SendP2PMsg",
        "SendGroupMsg",
        "SendMany",
        "SendStream",
        "SyncMsg",
        "AcceptP2PMsgAck",
        "Mark",
    },
    "RegisterServerRPC": {
        "Register",
        "Auth",
        "VerifyToken",
        "Login",
        "Ping",
        "PingMany",
        "Logout",
        "Online",
        "Routes",
        "GetUser",
        "CreateGroup",
        "JoinGroup",
        "QuitGroup",
        "Members",
        "GetGroup",
    },
    "ManagerServerRPC": {"Sync", "SyncMany", "LatestVersion", "SetExceptionMsg"},
    "NotifyServerRPC": {"Notify", "NotifyMany"},
    "AccessServerRPC": {"SendNotify", "SendNotifyMany", "Kick", "Reconnect", "SendP2PMsgFromJob"},
    "IDGenServerRPC": {"Next", "NextMany", "Segment", "GetUUID"},
}

# Run in a fresh interpreter, so the copy under test is what gets imported (and registered).
INSPECT = """
import importlib, json, sys
from google.protobuf.descriptor import FieldDescriptor
sys.path.insert(0, sys.argv[1])
package = sys.argv[2]
modules = ["external.base_pb2", "external.error_pb2", "external.gateway_pb2", "external.access_pb2",
           "rpc.common_pb2", "rpc.logic_pb2", "rpc.register_pb2", "rpc.manager_pb2", "rpc.notify_pb2",
           "rpc.access_pb2", "rpc.idgen_pb2"]
TYPES = {getattr(FieldDescriptor, name): name[5:].lower() for name in dir(FieldDescriptor)
         if name.startswith("TYPE_")}
messages, services, stubs = {}, {}, {}
for name in modules:
    module = importlib.import_module(f"{package}.{name}")
    file = module.DESCRIPTOR
    for message in file.message_types_by_name.values():
        fields = {}
        for field in message.fields:
            kind = TYPES[field.type]
            if field.message_type is not None:
                kind = field.message_type.full_name
            if field.is_repeated:
                kind = "repeated " + kind
            fields[field.name] = [field.number, kind]
        messages[message.full_name] = {"module": type(module.__dict__[message.name]()).__module__,
                                       "fields": fields}
    for service in file.services_by_name.values():
        services[service.full_name] = sorted(method.name for method in service.methods)
        grpc_module = importlib.import_module(f"{package}.{name}_grpc")
        expected = [f"{service.name}Stub", f"{service.name}Servicer", f"add_{service.name}Servicer_to_server"]
        stubs[service.name] = all(hasattr(grpc_module, attribute) for attribute in expected)
json.dump({"messages": messages, "services": services, "stubs": stubs}, sys.stdout)
"""


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("build") / "genpkg"
    result = proto_build.build(out, force=True)
    assert result.generated
    return out


@pytest.fixture(scope="module")
def inspected(generated: Path) -> dict[str, dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-c", INSPECT, str(generated.parent), generated.name],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    data: dict[str, dict[str, object]] = json.loads(done.stdout)
    return data


def fields_of(inspected: dict[str, dict[str, object]], full_name: str) -> dict[str, tuple[int, str]]:
    message = inspected["messages"][full_name]
    assert isinstance(message, dict)
    return {name: (number, kind) for name, (number, kind) in message["fields"].items()}


def test_generates_messages_grpc_modules_and_stubs(generated: Path) -> None:
    files = {path.relative_to(generated).as_posix() for path in generated.rglob("*") if path.is_file()}
    for module in ("external/access_pb2", "rpc/logic_pb2", "rpc/idgen_pb2"):
        assert {f"{module}.py", f"{module}.pyi"} <= files
    assert {"rpc/logic_pb2_grpc.py", "rpc/logic_pb2_grpc.pyi", "__init__.py", "rpc/__init__.py"} <= files
    # No empty gRPC shells for files without services.
    assert not any(name.startswith("external/") and "_grpc" in name for name in files)


def test_generated_imports_are_relative(generated: Path) -> None:
    absolute = re.compile(r"^(from|import) (external|rpc)\b", re.MULTILINE)
    for path in generated.rglob("*.py*"):
        assert not absolute.search(path.read_text()), path
    assert "from . import common_pb2" in (generated / "rpc" / "logic_pb2.py").read_text()
    assert "from . import common_pb2" in (generated / "rpc" / "logic_pb2.pyi").read_text()


def test_original_messages_keep_their_field_numbers_and_types(
    inspected: dict[str, dict[str, object]],
) -> None:
    for name, original in ORIGINAL.items():
        generated = fields_of(inspected, f"external.{name}")
        assert {field: generated.get(field) for field in original} == original, name
        added = {field: spec for field, spec in generated.items() if field not in original}
        assert added == ADDED.get(name, {}), name
        assert all(number > max(n for n, _ in original.values()) for number, _ in added.values()), name


def test_sample_numbers_from_the_spec(inspected: dict[str, dict[str, object]]) -> None:
    assert fields_of(inspected, "external.ReqSendP2PMsg")["msg"] == (6, "string")
    assert fields_of(inspected, "external.Error")["errCode"] == (2, "uint32")
    assert fields_of(inspected, "external.ResLogin")["errCode"] == (3, "uint32")


def test_external_protocol_has_exactly_the_known_messages(inspected: dict[str, dict[str, object]]) -> None:
    external = {name.split(".", 1)[1] for name in inspected["messages"] if name.startswith("external.")}
    assert external == set(ORIGINAL) | {"ResReconnect", "ReqMark", "ResMark"}


def test_messages_know_their_real_module(inspected: dict[str, dict[str, object]], generated: Path) -> None:
    message = inspected["messages"]["external.ReqLogin"]
    assert isinstance(message, dict)
    assert message["module"] == f"{generated.name}.external.access_pb2"


def test_rpc_services_and_response_layout(inspected: dict[str, dict[str, object]]) -> None:
    services = inspected["services"]
    assert {name: set(methods) for name, methods in services.items()} == {  # type: ignore[call-overload]
        f"fishchat.rpc.{name}": methods for name, methods in SERVICES.items()
    }
    assert all(inspected["stubs"].values()) and len(inspected["stubs"]) == len(SERVICES)
    responses = [
        name for name in inspected["messages"] if name.startswith("fishchat.rpc.") and name.endswith("Res")
    ]
    assert len(responses) >= 30
    for name in responses:
        fields = fields_of(inspected, name)
        assert (fields["errCode"], fields["errStr"]) == ((1, "uint32"), (2, "string")), name


def test_timeline_entries_are_byte_compatible_with_offset_msg(
    inspected: dict[str, dict[str, object]],
) -> None:
    offset = fields_of(inspected, "external.offsetMsg")
    timeline = fields_of(inspected, "fishchat.rpc.TimelineMsg")
    assert {name: timeline[name] for name in offset} == offset


def test_second_build_is_a_no_op(generated: Path) -> None:
    before = {path: path.stat().st_mtime_ns for path in generated.rglob("*.py")}
    result = proto_build.build(generated)
    assert not result.generated
    assert result.seconds < 1
    assert {path: path.stat().st_mtime_ns for path in generated.rglob("*.py")} == before
    assert proto_build.is_current(generated)
    assert proto_build.main(["--out", str(generated), "--check"]) == 0


def test_changed_inputs_rebuild_and_removed_files_disappear(tmp_path: Path) -> None:
    root = tmp_path / "protos"
    shutil.copytree(proto_build.PROTO_ROOT / "external", root / "external")
    out = tmp_path / "gen_copy"
    assert proto_build.build(out, root=root).generated
    assert not proto_build.build(out, root=root).generated
    (root / "external" / "base.proto").write_text(
        (root / "external" / "base.proto").read_text() + "\nmessage Extra { int64 x = 1; }\n"
    )
    assert not proto_build.is_current(out, root=root)
    assert proto_build.build(out, root=root).generated
    (root / "external" / "gateway.proto").unlink()
    proto_build.build(out, root=root)
    assert not (out / "external" / "gateway_pb2.py").exists()
    assert (out / "external" / "base_pb2.py").exists()


def test_protoc_errors_are_reported(tmp_path: Path) -> None:
    root = tmp_path / "protos"
    (root / "broken").mkdir(parents=True)
    (root / "broken" / "bad.proto").write_text('syntax = "proto3";\nmessage Bad { int64 x = ; }\n')
    with pytest.raises(proto_build.ProtoBuildError, match=r"bad\.proto"):
        proto_build.build(tmp_path / "out", root=root)
    (root / "top.proto").write_text('syntax = "proto3";\n')
    with pytest.raises(proto_build.ProtoBuildError, match="must live in a folder"):
        proto_build.build(tmp_path / "out", root=root)
