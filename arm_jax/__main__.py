"""`python -m arm_jax ...` is `arm-jax ...` (for environments without the console script)."""

import sys

from arm_jax.cli.main import main

sys.exit(main())
