"""Teacher outputs (logits and hooked features) computed once per teacher and data set, kept on disk.

Keyed by the digests of the teacher's weights, the input array and the hooked layers, stored as .npy and
read memory-mapped, so the teacher's forward passes are skipped on every later epoch and run. With
augmentation the teacher's outputs change every step, so the cache is bypassed and the teacher runs online.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import torch

from edgedistill import __version__
from edgedistill.distill.compute import device_of
from edgedistill.distill.hooks import FeatureHooks
from edgedistill.fileio import cache_root, sha256_file, sha256_json


@dataclass
class TeacherOutputs:
    logits: np.ndarray  # (N, classes), possibly memory-mapped
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    status: str = "memory"  # hit | miss | memory
    key: str = ""

    def batch(self, idx: torch.Tensor):
        """Logits and features of the examples `idx` as tensors (fancy indexing copies out of the memmap)."""
        i = idx.numpy()
        return (torch.from_numpy(self.logits[i]), {k: torch.from_numpy(v[i]) for k, v in self.outputs.items()},
                {k: torch.from_numpy(v[i]) for k, v in self.inputs.items()})


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of a model's state: every tensor's name and bytes."""
    weights = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return weights.hexdigest()


def data_digest(x: np.ndarray) -> str:
    """sha256 of the inputs. Image files are digested file by file (ImageArray.digest), never read into one array."""
    return x.digest() if hasattr(x, "digest") else hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def cache_key(teacher: torch.nn.Module, x: np.ndarray, outputs: list[str], inputs: list[str], **more) -> str:
    """The entry of this teacher's outputs on `x` (and whatever `more` names: augmented views' settings)."""
    return sha256_json({"weights": weights_digest(teacher), "data": data_digest(x), "shape": list(x.shape),
                        "outputs": outputs, "inputs": inputs, "version": __version__, **more})[:32]


@torch.no_grad()
def compute(teacher: torch.nn.Module, x: np.ndarray, outputs: list[str], inputs: list[str],
            batch_size: int = 256) -> TeacherOutputs:
    """One pass of the teacher over `x` in eval mode, with the named layers' outputs and inputs."""
    teacher.eval()
    device = device_of(teacher)  # the teacher runs where it is; what is kept is on the CPU
    logits, outs, ins = [], {p: [] for p in outputs}, {p: [] for p in inputs}
    with FeatureHooks(teacher, outputs) as out_hooks, FeatureHooks(teacher, inputs, "input") as in_hooks:
        for i in range(0, len(x), batch_size):
            logits.append(teacher(torch.from_numpy(x[i:i + batch_size]).to(device)).float().cpu().numpy())
            for store, hooks in ((outs, out_hooks), (ins, in_hooks)):
                for path, tensor in hooks.collect("teacher pass").items():
                    store[path].append(tensor.float().cpu().numpy())
    return TeacherOutputs(np.concatenate(logits), {k: np.concatenate(v) for k, v in outs.items()},
                          {k: np.concatenate(v) for k, v in ins.items()})


def load_or_compute(teacher: torch.nn.Module, x: np.ndarray, outputs: list[str], inputs: list[str],
                    root: Path | None = None) -> TeacherOutputs:
    """The cached outputs for this teacher and data, computing and storing them on a miss (and rebuilding an
    entry that no longer hashes as recorded; the status says so)."""
    key = cache_key(teacher, x, outputs, inputs)
    cached, damage = lookup_checked(key, root)
    if cached is not None:
        return cached
    result = compute(teacher, x, outputs, inputs)
    store(key, result, root)
    if damage:
        result.status = f"rebuilt: {damage}"
    return result


def lookup(key: str, root: Path | None = None) -> TeacherOutputs | None:
    """A complete, intact cache entry (in memory, or memory-mapped when large); None when there is none (a damaged
    one is removed)."""
    return lookup_checked(key, root)[0]


def lookup_checked(key: str, root: Path | None = None) -> tuple[TeacherOutputs | None, str | None]:
    """(the entry, None), (None, None) when there is none, or (None, what was wrong) for a damaged entry,
    which is removed so that it is rebuilt."""
    folder = (root or cache_root()) / "teacher" / key
    meta, damage = read_entry(folder)
    if meta is None:
        return None, damage
    try:
        mode = "r" if _entry_bytes(folder, meta) > psutil.virtual_memory().available // 4 else None
        load = lambda name: np.load(folder / name, mmap_mode=mode, allow_pickle=False)  # noqa: E731
        return TeacherOutputs(load("logits.npy"), {p: load(f) for p, f in meta["outputs"].items()},
                              {p: load(f) for p, f in meta["inputs"].items()}, status="hit", key=key), None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        return None, f"the cached entry {folder} could not be read ({' '.join(str(exc).split())[:120]})"


def _entry_bytes(folder: Path, meta: dict) -> int:
    """An entry's size on disk. An entry that fits a quarter of the free memory is read into it, not mapped: a
    mapped file truncated by someone else while a stage reads it kills the process with SIGBUS, which no
    handler can turn into a message. Only larger entries are memory-mapped."""
    return sum((folder / name).stat().st_size for name in meta["sha256"])


def store(key: str, result: TeacherOutputs, root: Path | None = None) -> None:
    """Write `result` as the entry `key` (whole or not at all), and mark it a miss. A cache that cannot be
    written (a full disk) only costs speed: the run goes on, and the status says why nothing was stored."""
    arrays, meta = {"logits.npy": result.logits}, {"outputs": {}, "inputs": {}}
    for kind, named in (("outputs", result.outputs), ("inputs", result.inputs)):
        for i, (path, array) in enumerate(named.items()):
            meta[kind][path] = f"{kind}-{i}.npy"
            arrays[meta[kind][path]] = array
    result.status, result.key = "miss", key
    try:
        write_entry((root or cache_root()) / "teacher" / key, arrays, meta)
    except OSError as exc:
        result.status = f"miss, not stored ({exc.strerror or exc}: {exc.filename or cache_root()})"


def write_entry(folder: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """A cache entry: .npy files and meta.json with their sha256, written in a temporary folder and renamed
    into place, so a reader sees it whole or not at all (meta.json, written last, marks it complete). A
    failed write leaves nothing behind."""
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        meta = {**meta, "sha256": {}}
        for name, array in arrays.items():
            np.save(tmp / name, array)
            meta["sha256"][name] = sha256_file(tmp / name)
        (tmp / "meta.json").write_text(json.dumps(meta))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.replace(tmp, folder)
    except OSError:  # another process stored the same entry first; theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)


def read_entry(folder: Path) -> tuple[dict | None, str | None]:
    """The meta.json of a complete entry whose every file still hashes as recorded: (meta, None);
    (None, None) when there is no entry; (None, why) when it is damaged, after removing it."""
    if not (folder / "meta.json").is_file():
        return None, None
    try:
        meta = json.loads((folder / "meta.json").read_text())
        digests = meta["sha256"]
        bad = next((name for name, digest in digests.items()
                    if "/" in name or sha256_file(folder / name) != digest), None)
        why = None if bad is None else f"{bad} does not hash as recorded"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        why = f"its meta.json is unreadable or without digests ({type(exc).__name__})"
    if why is None:
        return meta, None
    shutil.rmtree(folder, ignore_errors=True)
    return None, f"the cached entry {folder.name} was damaged ({why}) and is rebuilt"


def merge_shards(shards: list[TeacherOutputs], n: int) -> TeacherOutputs:
    """The outputs of examples 0..n-1 from shards where shard r holds examples r, r+W, r+2W, ..."""
    world = len(shards)

    def interleave(parts: list[np.ndarray]) -> np.ndarray:
        full = np.empty((n, *parts[0].shape[1:]), dtype=parts[0].dtype)
        for r, part in enumerate(parts):
            full[r::world] = part
        return full

    first = shards[0]
    return TeacherOutputs(interleave([s.logits for s in shards]),
                          {k: interleave([s.outputs[k] for s in shards]) for k in first.outputs},
                          {k: interleave([s.inputs[k] for s in shards]) for k in first.inputs})
