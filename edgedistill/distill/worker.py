"""Distributed distillation: the distill stage as data-parallel processes under torchrun.

One machine: `edgedistill run --nproc N` (or `distill.processes: N`) makes the distill stage start
`python -m torch.distributed.run --standalone --nproc_per_node N -m edgedistill.stages.distill ...`.
Several machines: the user starts `torchrun --nnodes ... -m edgedistill run PIPELINE --out DIR` on each;
rank 0 runs the whole pipeline, and the other ranks wait until rank 0 reaches the distill stage, receive
the files it needs (so the run folders need not be shared), train their shards, and leave.

Every rank runs the same stage code under DistributedDataParallel on its shard of every epoch, and rank 0
alone writes the weights, the resumable training state, the manifest and the report. The stage's training
function is passed in (`train`): this library never imports a stage.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from edgedistill.errors import StageFailed, UserError
from edgedistill.fileio import atomic_write_bytes, sha256_bytes, sha256_file

FAILURE = "edgedistill-rank-failed:"
# How long ranks other than 0 wait for rank 0 to reach the distill stage (teacher training comes first).
RANK_WAIT = timedelta(seconds=float(os.environ.get("EDGEDISTILL_RANK_WAIT_S", 24 * 3600)))
_released = False  # on rank 0: whether the other ranks have been told what to do


def torchrun_rank() -> int | None:
    """This process's rank when torchrun started it as one of several (its environment says so), else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ and "MASTER_ADDR" in os.environ:
        return int(os.environ["RANK"])
    return None


def run_distributed(spec, ctx):
    """Run the distill stage on spec.distill.processes local ranks; its StageResult, or StageFailed naming
    the rank that failed."""
    from edgedistill.pipeline.engine import StageResult

    n = spec.distill.processes
    result_path = ctx.stage_dir("distill") / f"distributed-result-{ctx.inputs_digest[:12]}.json"
    result_path.unlink(missing_ok=True)
    from edgedistill.distill.compute import resolve
    from edgedistill.distill.parallel import backend

    on_gpu = resolve(spec.train.device, spec.train.precision).is_cuda
    ctx.console.print(f"  distributed: {n} processes (torchrun, DDP, {backend() if on_gpu else 'gloo'})")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           "-m", "edgedistill.stages.distill", str(ctx.run_dir), ctx.inputs_digest, str(result_path)]
    # Each rank gets an equal share of the cores instead of all of them.
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // n))}
    if not on_gpu:  # a CPU run on a machine with GPUs: the ranks' collectives carry CPU tensors
        env["EDGEDISTILL_DIST_BACKEND"] = "gloo"
    proc = subprocess.run(cmd, stdout=None, stderr=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0 or not result_path.is_file():
        raise StageFailed(_failure(proc.stderr, proc.returncode))
    data = json.loads(result_path.read_text())
    return StageResult(outputs={k: Path(v) for k, v in data["outputs"].items()}, metrics=data["metrics"])


def init_process_group() -> int:
    """Join torchrun's process group; this process's rank."""
    import torch.distributed as dist

    from edgedistill.distill.parallel import backend

    dist.init_process_group(backend(), timeout=RANK_WAIT)
    return dist.get_rank()


def run_as_rank(run_pipeline, run_dir: Path, console, train):
    """The run as one rank of a torchrun job: rank 0 runs `run_pipeline()` (whose distill stage calls
    `release_ranks`); the others follow into the distill stage (`train(spec, ctx)`). Returns rank 0's manifest,
    else None."""
    import torch.distributed as dist

    rank = init_process_group()
    try:
        if rank == 0:
            try:
                return run_pipeline()
            finally:
                release_ranks(None)  # a run that never reached the distill stage lets the others go
        _follow(run_dir, rank, console, train)
        return None
    finally:
        dist.destroy_process_group()


def release_ranks(ctx) -> None:
    """Rank 0: send the other ranks the distill stage's digest and the files it reads (None: nothing to do)."""
    global _released
    import torch.distributed as dist

    if _released or not dist.is_initialized():
        return
    _released = True
    message = None
    if ctx is not None:
        message = {"digest": ctx.inputs_digest, "files": {str(p.relative_to(ctx.run_dir)): p.read_bytes()
                                                          for p in _distill_inputs(ctx)}}
    dist.broadcast_object_list([message], src=0)


def _distill_inputs(ctx) -> list[Path]:
    """What a rank needs to run the distill stage: the resolved pipeline and device, the manifest, the
    teacher's and student's outputs, and the training state of an interrupted earlier attempt."""
    from edgedistill.pipeline.engine import DEVICE, RESOLVED
    from edgedistill.pipeline.manifest import MANIFEST

    files = [ctx.run_dir / name for name in (RESOLVED, DEVICE, MANIFEST)]
    for stage in ("teacher", "student"):
        files += [ctx.run_dir / out.path for out in ctx.record(stage).outputs.values()]
    files += sorted((ctx.run_dir / "distill").glob(f"*train-state-{ctx.inputs_digest[:12]}.pt"))
    return [f for f in files if f.is_file()]


def _follow(run_dir: Path, rank: int, console, train) -> None:
    """A rank other than 0: wait for rank 0, write the files it sent (unless a shared folder has them
    already), and train this rank's shard of the distill stage."""
    import torch.distributed as dist

    from edgedistill.distill.trainer import quiet_console
    from edgedistill.pipeline.engine import load_run

    console.print(f"rank {rank}: waiting for rank 0 to reach the distill stage")
    box = [None]
    dist.broadcast_object_list(box, src=0)
    message = box[0]
    if message is None:
        console.print(f"rank {rank}: rank 0 did not run the distill stage; nothing to do here")
        return
    for name, data in message["files"].items():
        path = run_dir / name
        if not (path.is_file() and path.stat().st_size == len(data) and sha256_file(path) == sha256_bytes(data)):
            atomic_write_bytes(path, data)
    try:
        ctx = load_run(run_dir, console=quiet_console())
        ctx.inputs_digest = message["digest"]
        train(ctx.spec, ctx)
    except Exception as exc:  # noqa: BLE001 - one line naming the rank; torchrun then stops the others
        print(f"{FAILURE} rank {rank}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    console.print(f"rank {rank}: distill shard done; rank 0 writes the results")


def check_torchrun_run(spec, out: Path | None) -> None:
    """The limits of a run started by torchrun on several ranks, as one-line errors."""
    if out is None:
        raise UserError("under torchrun, pass --out DIR: every rank must use the same run folder path "
                        "(shared, or one per machine)")
    if spec.distill.processes > 1:
        raise UserError(f"distill.processes is {spec.distill.processes} under torchrun; torchrun's "
                        "--nproc_per_node and --nnodes set the processes, so leave processes at 1 (and no --nproc)")


def _failure(stderr: str, code: int) -> str:
    """One line: the first rank that reported a failure and why, else torchrun's own account."""
    for line in stderr.splitlines():
        if FAILURE in line:
            return "distributed distill failed on " + line.split(FAILURE, 1)[1].strip()
    ranks = re.findall(r"rank\s*:\s*(\d+)", stderr)
    tail = " ".join(stderr.split()[-30:])
    return f"distributed distill failed (exit {code}" + (f", rank {ranks[0]}" if ranks else "") + f"): {tail}"


def main(train, argv: list[str] | None = None) -> int:
    """One local rank of `run_distributed`'s torchrun job: the distill stage's `train(spec, ctx)` on its shard."""
    import torch.distributed as dist
    from rich.console import Console

    from edgedistill.distill.trainer import quiet_console
    from edgedistill.pipeline.engine import load_run

    run_dir, digest, result_path = argv or sys.argv[1:]
    rank = init_process_group()
    try:
        ctx = load_run(Path(run_dir), console=Console() if rank == 0 else quiet_console())
        ctx.inputs_digest = digest
        result = train(ctx.spec, ctx)
        if rank == 0:
            from edgedistill.fileio import atomic_write_json

            atomic_write_json(Path(result_path), {"outputs": {k: str(v) for k, v in result.outputs.items()},
                                                  "metrics": result.metrics})
        dist.barrier()
        return 0
    except Exception as exc:  # noqa: BLE001 - reported as one line naming the rank, then torchrun stops the rest
        print(f"{FAILURE} rank {rank}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()

