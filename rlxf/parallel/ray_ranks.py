"""Training ranks as Ray actors (``distributed.backend: ray``).

The command's process becomes a driver: it starts (or joins) Ray, places one actor per rank,
points them at each other (rank 0 hosts the torch.distributed store) and runs the same recipe
in every actor, exactly as ``torchrun`` would. A rank that dies ends the attempt; with
``distributed.max_restarts`` the driver starts fresh actors, which resume from the run's last
checkpoint, so no step is lost or run twice.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import tempfile
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
