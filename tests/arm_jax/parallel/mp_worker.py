"""One process of the 2-process test (not collected by pytest: run as a script).

argv: process_id num_processes port out.npz overrides-json
Each process owns 2 CPU devices; together they form one global data=2 x model=2 mesh.
"""

import json
import os
import sys


def main() -> None:
    pid, nproc, port, out, overrides = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                        sys.argv[4], json.loads(sys.argv[5]))
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)
    assert jax.device_count() == 2 * nproc and jax.local_device_count() == 2

    from mp_common import run_reference

    result = run_reference(overrides, jax.devices(), data=2, model=nproc)
    if pid == 0:
        import numpy as np

        np.savez(out, **result)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
