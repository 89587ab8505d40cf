"""Ray for training: ranks as Ray actors (``distributed.backend: ray``), and Ray started or
joined for each rank's own workers (rollout, reward, reference).

With ``backend: ray`` the command's process becomes a driver: it starts (or joins) Ray, places
one actor per rank, points them at each other (rank 0 hosts the torch.distributed store) and runs
the same recipe in every actor, exactly as ``torchrun`` would. A rank that dies ends the attempt; with
``distributed.max_restarts`` the driver starts fresh actors, which resume from the run's last
checkpoint, so no step is lost or run twice.
"""

from __future__ import annotations

import importlib
import logging
import os
import secrets
import socket
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from rlxf.config import DistributedSection

log = logging.getLogger(__name__)

UNIX_SOCKET_BUDGET = 40
"""Longest Ray temp dir kept in the run folder: Ray's socket paths below it must stay under 108 bytes."""


class RankActor:
    """One training rank: the recipe runs here with torch.distributed set up from ``env``."""

    def address(self) -> tuple[str, int]:
        """This node's address and a free port for the rank-0 store."""
        with socket.socket() as probe:
            probe.bind(("", 0))
            port = probe.getsockname()[1]
        return socket.gethostbyname(socket.gethostname()), port

    def pid(self) -> int:
        return os.getpid()

    def run(self, module_name: str, function_name: str, config: Any, env: dict[str, str], threads: int) -> None:
        import torch

        from rlxf.parallel import distributed

        os.environ.update(env)
        torch.set_num_threads(threads)
        distributed.init_from_environment()
        try:
            getattr(importlib.import_module(module_name), function_name)(config)
        finally:
            distributed.shutdown()


def ray_temp_dir(output_dir: Path) -> str:
    """Ray's temporary files in the run folder, or in a short /tmp folder linked from it when the
    run folder's path is too long for Ray's sockets."""
    inside = output_dir.resolve() / "ray"
    if len(str(inside)) <= UNIX_SOCKET_BUDGET:
        inside.mkdir(parents=True, exist_ok=True)
        return str(inside)
    short = tempfile.mkdtemp(prefix="rlxf-ray-")
    output_dir.mkdir(parents=True, exist_ok=True)
    if not inside.exists():
        inside.symlink_to(short, target_is_directory=True)
    return short


def start_ray(section: DistributedSection, output_dir: Path, cpus: int) -> bool:
    """Join the cluster at ``section.address``, or start Ray here with ``cpus`` CPUs; False when
    Ray was already running in this process."""
    try:
        import ray
    except ImportError as error:
        raise RuntimeError("this run uses Ray: pip install 'rlxf[ray]'") from error
    if ray.is_initialized():
        return False
    if section.address:
        ray.init(address=section.address, log_to_driver=True)
    else:
        ray.init(num_cpus=cpus, _temp_dir=ray_temp_dir(output_dir), include_dashboard=False, log_to_driver=True)
    return True


def run_on_ray(module_name: str, function_name: str, config: Any, section: DistributedSection) -> None:
    # each rank's own rollout, reward and reference workers are actors beside it
    cpus = section.ranks * (1 + section.workers_per_rank) * section.cpus_per_rank
    started_here = start_ray(section, Path(config.output_dir), cpus)
    import ray

    actor_class = ray.remote(RankActor)
    try:
        for attempt in range(section.max_restarts + 1):
            ranks = [actor_class.options(num_cpus=section.cpus_per_rank).remote() for _ in range(section.ranks)]
            try:
                host, port = ray.get(ranks[0].address.remote())
                runs = [
                    rank.run.remote(
                        module_name,
                        function_name,
                        config,
                        _rank_env(index, section.ranks, host, port, attempt),
                        section.cpus_per_rank,
                    )
                    for index, rank in enumerate(ranks)
                ]
                ray.get(runs)
                return
            except ray.exceptions.RayActorError as error:
                if attempt == section.max_restarts:
                    raise RuntimeError(f"a training rank died and no restarts are left: {error}") from error
                log.warning("a training rank died (%s); restarting all ranks from the last checkpoint", error)
            finally:
                for rank in ranks:
                    ray.kill(rank)
    finally:
        if started_here:
            ray.shutdown()


def _rank_env(rank: int, world_size: int, host: str, port: int, attempt: int) -> dict[str, str]:
    return {
        "RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "LOCAL_RANK": str(rank),
        "MASTER_ADDR": host,
        "MASTER_PORT": str(port),
        "TORCHELASTIC_RESTART_COUNT": str(attempt),
        "TORCHELASTIC_USE_AGENT_STORE": "False",
    }


def start_ray_for_workers(section: DistributedSection, output_dir: Path, workers: int) -> bool | None:
    """Ray for one training rank's ``workers`` (rollout, reward, reference): None when there are
    none, else whether this process joined Ray (and so leaves it at the end, :func:`close_pools`).
    With several training ranks each rank has workers of its own: rank 0 starts Ray and the others
    join it with its address and a token made for this run (Ray's local clusters require one), or
    every rank joins ``section.address``. Ranks that are Ray actors themselves (``backend=ray``)
    start their workers in the driver's cluster."""
    import torch

    from rlxf.parallel import distributed

    if not workers:
        return None
    if section.backend == "ray":
        import ray

        if ray.is_initialized():  # a rank actor: the driver owns Ray
            return False
    if distributed.world_size() == 1 or section.address:
        return start_ray(section, output_dir, workers * section.cpus_per_rank)
    joining = [None, None, None]
    if distributed.is_main():
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
        start_ray(section, output_dir, distributed.world_size() * workers * section.cpus_per_rank)
        import ray

        joining = [ray.get_runtime_context().gcs_address, os.environ["RAY_AUTH_MODE"], os.environ["RAY_AUTH_TOKEN"]]
    torch.distributed.broadcast_object_list(joining, src=0)
    if not distributed.is_main():
        os.environ.update(RAY_AUTH_MODE=joining[1], RAY_AUTH_TOKEN=joining[2])
        start_ray(replace(section, address=joining[0]), output_dir, 0)
    return True


def close_pools(pools, *, leave_ray: bool) -> None:
    """Close this rank's actor pools (anything else in ``pools`` is left alone), and leave Ray when
    this run joined it: rank 0, which may have started it for every rank, last."""
    from rlxf.parallel import distributed
    from rlxf.parallel.actors import ActorPool

    for pool in pools:
        if isinstance(pool, ActorPool):
            pool.close()
    if not leave_ray:
        return
    import ray

    if not distributed.is_main():
        ray.shutdown()
    distributed.barrier()
    if distributed.is_main():
        ray.shutdown()
