"""Runs a real two-node Ray cluster (1 CPU per node) on this machine until stdin closes.

Started by tests/training/test_distributed.py as its own process, so the test process's own Ray connection is
never shut down and re-initialised (Ray Train's controller does not survive that within one process)."""

import sys

from ray.cluster_utils import Cluster

if __name__ == "__main__":
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes(timeout=120)
        print(cluster.address, flush=True)
        sys.stdin.read()  # until the test closes our stdin
    finally:
        cluster.shutdown()
