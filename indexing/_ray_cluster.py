"""Connecting to Ray (the optional ``genret[ray]`` extra): one helper, so that nothing imports Ray unless asked.

``ray_session(address)`` joins the cluster at ``address`` (``"auto"``: the one this node belongs to; ``ray://…``: a
Ray client) or, with none, starts a local one-node cluster (``num_cpus`` of them) for the length of the block.  A
session that was already connected (a test's ``ray.init``, a notebook) is used as it is and left connected.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..core import GenretError

log = logging.getLogger("genret")

INSTALL_HINT = "pip install 'genret[ray]'"


def import_ray() -> Any:
    """The ``ray`` module, or a one-line ``GenretError`` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise GenretError(f"Ray is not installed: {INSTALL_HINT} (the --ray options need it)") from None
    return ray


@contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[Any]:
    """A connected Ray (the module); started here (and shut down at the end) unless it already was."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                               "configure_logging": False}
    if address:
        options["address"] = address
    else:
        options["num_cpus"] = num_cpus or os.cpu_count() or 1
        # Ray runs its workers at nice 15; on a machine shared with other work that starves them (a local cluster
        # is this machine: its workers get the driver's priority unless the user set one)
        os.environ.setdefault("RAY_worker_niceness", "0")
    # workers inherit the driver's environment: one BLAS/OpenMP thread each unless the user said otherwise
    env = {k: os.environ.get(k, "1") for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM")}
    env["TOKENIZERS_PARALLELISM"] = os.environ.get("TOKENIZERS_PARALLELISM", "false")
    env.update({k: v for k, v in os.environ.items() if k.startswith(("HF_", "GENRET_", "TRANSFORMERS_"))
                and "KEY" not in k and "TOKEN" not in k})  # model caches and offline flags; no credentials
    options["runtime_env"] = {"env_vars": env}
    try:
        ray.init(**options)
    except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; one line for the user
        raise GenretError(f"could not {'connect to Ray at ' + address if address else 'start a local Ray'}: "
                          f"{exc}") from None
    log.info("ray: %s (%s)", "connected to " + address if address else "local cluster started",
             ", ".join(f"{k}={v:g}" for k, v in sorted(ray.cluster_resources().items())
                       if k in ("CPU", "GPU", "memory")))
    try:
        yield ray
    finally:
        ray.shutdown()
