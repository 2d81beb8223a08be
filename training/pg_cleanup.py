"""Placement-group clean-up for clusters without a dashboard.

A training run's workers hold a placement group that the Train controller removes when it shuts down. A controller
that dies instead (a sweep trial Tune stops, whose actor takes the controller with it) leaves the group reserved
until the driver's job ends: on a sweep's cluster, every later trial then waits for CPUs that never come free.
Ray Train's PlacementGroupCleaner (a detached actor) removes such a group, but it asks the State API whether the
controller lives, and that API is served by the dashboard, which a local cluster here does not run. This variant
asks the controller itself: a call to a dead actor fails at once with RayActorError.

It reuses Ray Train's cleaner actor and callback (ray 2.60.0, pinned) and replaces only the liveness question.
"""

import contextlib
import logging
import queue
from typing import Any

import ray
from ray._common.constants import HEAD_NODE_RESOURCE_NAME
from ray.exceptions import GetTimeoutError, RayActorError
from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
from ray.train.v2._internal.execution.controller import placement_group_cleaner
from ray.train.v2._internal.execution.controller.placement_group_cleaner import PlacementGroupCleaner

PING_TIMEOUT_S = 30.0  # a busy controller answers late; only an error means it is gone


def controller_alive(controller: Any) -> bool:
    try:
        ray.get(controller.__ray_ready__.remote(), timeout=PING_TIMEOUT_S)
    except RayActorError:
        return False
    except GetTimeoutError:  # busy, not gone
        pass
    return True


class ControllerPingingCleaner(PlacementGroupCleaner):
    """Ray Train's cleaner actor, judging the controller by a call to it rather than by the State API."""

    def __init__(self, controller: Any, controller_actor_id: str, check_interval_s: float, stop_timeout: float
                 ) -> None:
        super().__init__(controller_actor_id=controller_actor_id, check_interval_s=check_interval_s,
                         get_actor_timeout_s=0, stop_timeout=stop_timeout)
        self._controller = controller
        # Every sweep trial Tune stops takes its controller down: the clean-up that follows is routine there, and
        # Ray's warning about it would reach the sweep's console once per trial.
        logging.getLogger(placement_group_cleaner.__name__).addFilter(
            lambda record: not record.getMessage().startswith("Detected that the Ray Train controller actor"))

    def _monitor_loop(self) -> None:
        group = None
        while not self._stop_event.is_set():
            with contextlib.suppress(queue.Empty):
                group = self._pg_queue.get(timeout=self._check_interval_s)
            if self._stop_event.is_set() or controller_alive(self._controller):
                continue
            while not self._pg_queue.empty():  # the latest group registered, should one have just arrived
                group = self._pg_queue.get_nowait()
            self._cleanup_placement_group(group)
            break
        self._exit()
        self._monitor_thread = None


class ControllerPingingCleanerCallback(PlacementGroupCleanerCallback):
    """Ray Train's PlacementGroupCleanerCallback, launching `ControllerPingingCleaner` (runs in the controller)."""

    def after_controller_start(self, train_run_context: Any) -> None:
        context = ray.get_runtime_context()
        self._controller_actor_id = context.get_actor_id()
        cleaner = ray.remote(num_cpus=0)(ControllerPingingCleaner)
        # Detached, to outlive the controller and the trial actor that owns it; scheduled outside any placement
        # group (DEFAULT), since a Tune trial's actors inherit the trial's group and die when Tune removes it.
        self._cleaner = cleaner.options(lifetime="detached", scheduling_strategy="DEFAULT",
                                        resources={HEAD_NODE_RESOURCE_NAME: 0.001}).remote(
            context.current_actor, self._controller_actor_id, check_interval_s=self._check_interval_s,
            stop_timeout=PING_TIMEOUT_S + 5)
        self._cleaner.start_monitoring.remote()
