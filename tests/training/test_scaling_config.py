"""The scaling section: resources per worker, threads per worker, and errors that name the key."""

import pytest

from data_prep.errors import ConfigError
from flows.config import load_config


def test_cpu_workers_get_one_thread_per_reserved_cpu_by_default():
    scaling = load_config(None, ["scaling.resources_per_worker={CPU: 3}"]).scaling
    assert scaling.resources == {"CPU": 3.0} and scaling.threads == 3
    assert load_config(None, ["scaling.threads_per_worker=2"]).scaling.threads == 2


def test_gpu_workers_reserve_one_gpu_each_unless_told_otherwise():
    scaling = load_config(None, ["scaling.use_gpu=true", "scaling.resources_per_worker={CPU: 6}"]).scaling
    assert scaling.resources == {"GPU": 1.0, "CPU": 6.0}
    two = load_config(None, ["scaling.use_gpu=true", "scaling.resources_per_worker={CPU: 6, GPU: 2}"]).scaling
    assert two.resources["GPU"] == 2.0


@pytest.mark.parametrize(("override", "key"), [
    ("scaling.resources_per_worker={GPU: 1}", "scaling.resources_per_worker"),
    ("scaling.num_workers=0", "scaling.num_workers"),
    ("scaling.max_failures=-1", "scaling.max_failures"),
    ("scaling.cpus_per_worker=2", "scaling.cpus_per_worker"),  # renamed: resources_per_worker / threads_per_worker
])
def test_impossible_scaling_is_one_error_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])
