"""Things that must not drift: the proto's documentation, the generated stubs, the public
Python surface, the import cost of the client, and the settings documentation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

import routebook.client
from routebook.config import settings_markdown

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
PROTOS = sorted((PROTO_DIR / "routebook" / "v1").glob("*.proto"))
GENERATED = ROOT / "src" / "routebook" / "v1"


def _descriptor_set(tmp_path: Path) -> descriptor_pb2.FileDescriptorSet:
    out = tmp_path / "set.pb"
    rc = protoc.main(
        [
            "protoc",
            f"-I{PROTO_DIR}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *(str(p.relative_to(PROTO_DIR)) for p in PROTOS),
        ]
    )
    assert rc == 0
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _undocumented(file: descriptor_pb2.FileDescriptorProto) -> list[str]:
    """Paths (as names) of messages, fields, enums, values, services and methods with no
    leading comment. Source-location paths use the descriptor's field numbers."""
    comments = {
        tuple(loc.path): loc.leading_comments.strip() for loc in file.source_code_info.location
    }
    missing = []

    def check(path: tuple[int, ...], name: str) -> None:
        if not comments.get(path):
            missing.append(name)

    def walk_message(message: descriptor_pb2.DescriptorProto, path: tuple[int, ...]) -> None:
        # Request/response messages are documented by their RPC; every field still needs words.
        for i, field in enumerate(message.field):
            check((*path, 2, i), f"{message.name}.{field.name}")
        for i, nested in enumerate(message.nested_type):
            if not nested.options.map_entry:
                check((*path, 3, i), f"{message.name}.{nested.name}")
                walk_message(nested, (*path, 3, i))

    for i, message in enumerate(file.message_type):
        if not message.name.endswith(("Request", "Response")):
            check((4, i), message.name)
        walk_message(message, (4, i))
    for i, enum in enumerate(file.enum_type):
        check((5, i), enum.name)
        for j, value in enumerate(enum.value):
            check((5, i, 2, j), f"{enum.name}.{value.name}")
    for i, service in enumerate(file.service):
        check((6, i), service.name)
        for j, method in enumerate(service.method):
            check((6, i, 2, j), f"{service.name}.{method.name}")
    return missing


def test_every_proto_element_is_documented(tmp_path: Path) -> None:
    descriptors = _descriptor_set(tmp_path)
    assert len(descriptors.file) == len(PROTOS) >= 1
    for file in descriptors.file:
        assert _undocumented(file) == [], f"{file.name}: add a comment above each of these"


def test_enums_start_with_unspecified(tmp_path: Path) -> None:
    for file in _descriptor_set(tmp_path).file:
        for enum in file.enum_type:
            assert enum.value[0].number == 0
            assert enum.value[0].name.endswith("_UNSPECIFIED")


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    rc = protoc.main(
        [
            "protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            *(str(p.relative_to(PROTO_DIR)) for p in PROTOS),
        ]
    )
    assert rc == 0
    fresh = sorted((tmp_path / "routebook" / "v1").iterdir())
    assert fresh, "protoc produced nothing"
    for path in fresh:
        committed = GENERATED / path.name
        assert committed.exists(), f"{committed} is missing: run scripts/gen-proto"
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale: run scripts/gen-proto"
        )


def test_client_public_surface_is_pinned() -> None:
    assert sorted(routebook.client.__all__) == [
        "AllModelsFailed",
        "Attempt",
        "CascadeResult",
        "ModelCall",
        "ModelFailure",
        "RouterClient",
        "decide_request",
        "pb",
    ]


@pytest.mark.parametrize("module", ["routebook", "routebook.client", "routebook.cli"])
def test_importing_the_light_modules_loads_nothing_heavy(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "heavy = [m for m in ('torch', 'faiss', 'sqlalchemy', 'sentence_transformers') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_configuration_doc_is_generated_from_the_settings() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert doc == settings_markdown(), "docs/configuration.md is stale: routebook settings > it"
