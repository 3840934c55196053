"""Two processes on localhost (jax.distributed, gloo CPU collectives) = one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from arm_jax.ports import free_port

HERE = Path(__file__).parent


@pytest.mark.slow
def test_two_processes_match_single_process(tmp_path, tiny_overrides):
    # tables divisible by the 2-way model axis; a shallow stack keeps 3 compiles quick
    overrides = list(tiny_overrides) + ["features.sparse_hash_size=96",
                                        "features.item_hash_size=104", "model.wukong_layers=1",
                                        "model.target_attention=false"]
    port, out = free_port(), tmp_path / "mp.npz"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    procs = [subprocess.Popen([sys.executable, str(HERE / "mp_worker.py"), str(i), "2",
                               str(port), str(out), json.dumps(overrides)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=420)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(x[-3000:] for x in logs)
    multi = np.load(out)

    sys.path.insert(0, str(HERE))
    from mp_common import run_reference

    single = run_reference(overrides, jax.devices()[:1], data=1, model=1)
    assert str(multi["table_sharding"]) == "P('model', None)"
    assert np.array_equal(multi["lookup"], single["lookup"])          # gathers are exact
    np.testing.assert_allclose(multi["loss"], single["loss"], rtol=1e-5)
    np.testing.assert_allclose(multi["table_after"], single["table_after"], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(multi["head_after"], single["head_after"], rtol=1e-5, atol=1e-6)
