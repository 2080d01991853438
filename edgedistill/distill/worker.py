"""Distributed distillation: the distill stage as N data-parallel processes started by torchrun.

`edgedistill run --nproc N` (or `distill.processes: N`) makes the distill stage start
`python -m torch.distributed.run --standalone --nproc_per_node N -m edgedistill.distill.worker ...`;
each rank runs the same stage code under DistributedDataParallel (gloo on CPU, nccl on GPU) on its shard
of every epoch, and rank 0 alone writes the weights, the resumable training state and the result the
stage reads back. Several nodes: start this module with torchrun's own rendezvous on each node (see
README, "Distributed distillation").
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from edgedistill.errors import StageFailed

FAILURE = "edgedistill-rank-failed:"


def run_distributed(spec, ctx):
    """Run the distill stage on spec.distill.processes local ranks; its StageResult, or StageFailed naming
    the rank that failed."""
    from edgedistill.pipeline.engine import StageResult

    n = spec.distill.processes
    result_path = ctx.stage_dir("distill") / f"distributed-result-{ctx.inputs_digest[:12]}.json"
    result_path.unlink(missing_ok=True)
    ctx.console.print(f"  distributed: {n} processes (torchrun, DDP, {backend()})")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           "-m", "edgedistill.distill.worker", str(ctx.run_dir), ctx.inputs_digest, str(result_path)]
    # Each rank gets an equal share of the cores instead of all of them.
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // n))}
    proc = subprocess.run(cmd, stdout=None, stderr=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0 or not result_path.is_file():
        raise StageFailed(_failure(proc.stderr, proc.returncode))
    data = json.loads(result_path.read_text())
    return StageResult(outputs={k: Path(v) for k, v in data["outputs"].items()}, metrics=data["metrics"])


def backend() -> str:
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def _failure(stderr: str, code: int) -> str:
    """One line: the first rank that reported a failure and why, else torchrun's own account."""
    for line in stderr.splitlines():
        if FAILURE in line:
            return "distributed distill failed on " + line.split(FAILURE, 1)[1].strip()
    ranks = re.findall(r"rank\s*:\s*(\d+)", stderr)
    tail = " ".join(stderr.split()[-30:])
    return f"distributed distill failed (exit {code}" + (f", rank {ranks[0]}" if ranks else "") + f"): {tail}"


def main(argv: list[str] | None = None) -> int:
    import torch.distributed as dist
    from rich.console import Console

    from edgedistill.distill.trainer import quiet_console
    from edgedistill.pipeline.engine import load_run
    from edgedistill.stages.distill import train

    run_dir, digest, result_path = argv or sys.argv[1:]
    dist.init_process_group(backend())
    rank = dist.get_rank()
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


if __name__ == "__main__":
    sys.exit(main())
