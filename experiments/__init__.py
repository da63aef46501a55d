"""Benchmarks (bench_*.py) and paper-figure scripts. They use jax_hypereca's
public API only and print JSON lines (one measurement per line, with config
and units); times are reported as ratios against baselines measured in the
same run."""
