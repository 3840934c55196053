"""The `arm-jax` command line: a thin layer over library functions."""
