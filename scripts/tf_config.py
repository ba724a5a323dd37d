#!/usr/bin/env python3
"""Prints the TF_CONFIG of this worker for ``--strategy=multi_worker`` on a scheduler's cluster.

    # Slurm (one task per node, started by srun):
    export TF_CONFIG="$(python scripts/tf_config.py --hosts "$(scontrol show hostnames)")"
    # Kubernetes Indexed Job "droc" (completions N) behind a headless Service "droc":
    export TF_CONFIG="$(python scripts/tf_config.py --hosts "$(seq -f 'droc-%g.droc' 0 $((N-1)))")"

The cluster is the host list (whitespace- or comma-separated, each ``host`` or ``host:port``,
``--port`` for those without one), in the same order on every worker. This worker's index is
``--index``, else the first of SLURM_PROCID, JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs)
found in the environment. Worker 0 is the chief, which writes every output. Standard library
only, so it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

INDEX_VARIABLES = ("SLURM_PROCID", "JOB_COMPLETION_INDEX")


def tf_config(hosts: str, port: int, index: int | None, environ=os.environ) -> dict:
    """The TF_CONFIG dict; raises ValueError with a one-line reason."""
    workers = [h if ":" in h else f"{h}:{port}" for h in hosts.replace(",", " ").split()]
    if not workers:
        raise ValueError("--hosts is empty; pass the cluster's host names in worker order")
    if len(set(workers)) != len(workers):
        raise ValueError(f"--hosts lists a worker twice: {workers}")
    source = "--index"
    if index is None:
        for name in INDEX_VARIABLES:
            if environ.get(name, "").strip():
                source, raw = name, environ[name].strip()
                if not raw.isdigit():
                    raise ValueError(f"{name} must be a non-negative integer, got '{raw}'")
                index = int(raw)
                break
        else:
            raise ValueError(
                f"no worker index: pass --index or run under Slurm/Kubernetes "
                f"({' or '.join(INDEX_VARIABLES)} set)"
            )
    if not 0 <= index < len(workers):
        raise ValueError(f"worker index {index} (from {source}) is not in 0..{len(workers) - 1}")
    return {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", required=True, help="the cluster's hosts in worker order")
    p.add_argument("--port", type=int, default=12345, help="port of hosts given without one")
    p.add_argument("--index", type=int, default=None, help="this worker's index (default: env)")
    args = p.parse_args(argv)
    try:
        print(json.dumps(tf_config(args.hosts, args.port, args.index)))
    except ValueError as e:
        print(f"tf_config.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
