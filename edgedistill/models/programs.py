"""Teachers that are programs: a TorchScript file or a torch.export archive is code as much as weights, and
loading one runs parts of it (TorchScript's `__setstate__`, the pickles torch.export.load falls back to). Both
are checked before anything of them runs, and their graphs after loading, against one allow-list: tensor
operations, never file, pickle or process operations.

What is refused is what can reach outside the model: operator namespaces other than the tensor ones, and the
two registered tensor operators that touch files (`aten::from_file` maps a file, shared or not; `aten::save`
writes one). The list of every registered operator comes from `torch._C._jit_get_all_schemas()`; in torch 2.13
no other `aten`, `prim`, `prims` or `quantized` operator opens, maps, writes or runs anything.
"""

from __future__ import annotations

import io
import operator
import os
import re
import zipfile
from contextlib import contextmanager
from pathlib import Path

from edgedistill.errors import UserError

ALLOWED_NAMESPACES = frozenset({"aten", "prim", "prims", "quantized"})
DENIED_OPERATORS = frozenset({"aten::from_file", "aten::save"})
CONTROL_FLOW = frozenset({"cond", "while_loop", "map_impl"})  # torch.export's higher-order operators
MAX_ARCHIVE_MEMBERS = 100_000
MAX_CODE_BYTES = 64 * 2**20  # TorchScript source in an archive, all files together

# In TorchScript's serialized source, an operator call is `torch.<name>(`, `ops.<namespace>.<name>(` or
# `torch.ops.<namespace>.<name>(`.
_OPS_CALL = re.compile(r"\bops\.(\w+)\.(\w+)")
_TORCH_CALL = re.compile(r"\btorch\.(\w+)\s*\(")
_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")  # torch's weights_only refusal


def _refuse(path: Path, what: str) -> UserError:
    return UserError(f"{path}: teacher.path: {what}; a teacher that is a program may use tensor operations only "
                     f"(operator namespaces {', '.join(sorted(ALLOWED_NAMESPACES))}, without "
                     f"{', '.join(sorted(DENIED_OPERATORS))}), so nothing of it runs")


def check_operator(path: Path, qualified: str, where: str) -> None:
    """Refuse one operator (`namespace::name`) that is not a tensor operation."""
    namespace = qualified.split("::", 1)[0]
    if namespace not in ALLOWED_NAMESPACES or qualified in DENIED_OPERATORS:
        raise _refuse(path, f"{where} calls {qualified}")


def _members(path: Path) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{path}: teacher.path: not a zip archive ({exc})") from None
    if len(archive.infolist()) > MAX_ARCHIVE_MEMBERS:
        raise UserError(f"{path}: teacher.path: {len(archive.infolist()):,} archive members; at most "
                        f"{MAX_ARCHIVE_MEMBERS:,} are read")
    return archive


def check_torchscript_archive(path: Path) -> None:
    """Before torch.jit.load (which runs the archive's `__setstate__` methods): every operator its source
    calls is a tensor operation."""
    with _members(path) as archive:
        code = [info for info in archive.infolist() if "/code/" in info.filename and info.filename.endswith(".py")]
        if sum(info.file_size for info in code) > MAX_CODE_BYTES:
            raise UserError(f"{path}: teacher.path: more than {MAX_CODE_BYTES // 2**20} MiB of TorchScript source")
        for info in code:
            text = archive.read(info).decode("utf-8", errors="replace")
            for namespace, name in _OPS_CALL.findall(text):
                check_operator(path, f"{namespace}::{name}", info.filename)
            for name in _TORCH_CALL.findall(text):
                check_operator(path, f"aten::{name}", info.filename)


def check_torchscript_module(path: Path, module) -> None:
    """After loading: every node of the forward graph, with the submodules' methods inlined, is allowed."""
    def walk(block):
        for node in block.nodes():
            check_operator(path, node.kind(), "its forward graph")
            for sub in node.blocks():
                walk(sub)

    walk(module.inlined_graph)


def check_exported_archive(path: Path) -> None:
    """Before torch.export.load: every torch.save payload in the archive (weights and constants stored as
    pickles, sample inputs) loads with weights_only=True, so no pickle in it names anything but tensors."""
    import torch

    with _members(path) as archive:
        for info in archive.infolist():
            with archive.open(info) as member:
                head = member.read(4)
            if head[:2] != b"\x80\x02" and head != b"PK\x03\x04" and not info.filename.endswith(".pt"):
                continue
            try:
                torch.load(io.BytesIO(archive.read(info)), map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - whatever the payload is, it is not plain tensors
                named = _UNSUPPORTED.search(str(exc))
                why = f"it names {named.group(1)}" if named else type(exc).__name__
                raise UserError(f"{path}: teacher.path: {info.filename} holds a pickle that is not plain tensors "
                                f"({why}); a .pt2 teacher is read without running code from it") from None


def check_exported_program(path: Path, program) -> None:
    """After loading: every call in the program's graphs (and its submodules') is an allowed operator."""
    import torch

    for module in program.graph_module.modules():
        graph = getattr(module, "graph", None)
        for node in graph.nodes if graph is not None else ():
            if node.op == "call_method":
                raise _refuse(path, f"its graph calls the method {node.target}")
            if node.op != "call_function":
                continue
            target = node.target
            if target is operator.getitem:
                continue
            if isinstance(target, torch._ops.OpOverload):
                check_operator(path, target._schema.name, "its graph")
            elif isinstance(target, torch._ops.HigherOrderOperator) and target.name() in CONTROL_FLOW:
                continue  # their branches are graphs of this program, walked here too
            else:
                raise _refuse(path, f"its graph calls {getattr(target, '__name__', type(target).__name__)}")


@contextmanager
def weights_only_loads():
    """Every torch.load inside is weights_only, whatever its caller asks (torch.export.load asks for
    weights_only=False on pickled weights): torch reads TORCH_FORCE_WEIGHTS_ONLY_LOAD on each call."""
    saved = {key: os.environ.pop(key, None) for key in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD",
                                                         "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        for key, value in saved.items():
            if value is not None:
                os.environ[key] = value

