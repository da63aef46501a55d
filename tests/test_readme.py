"""The README's examples run as written; the first stays within 20 lines."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    lines = [line for line in code.splitlines() if line.strip()]
    assert len(lines) <= 20, len(lines)
    namespace: dict = {}
    exec(compile(code, "README.md example", "exec"), namespace)
    assert int(namespace["state"].step) == 1
    assert namespace["metrics"]["loss"] > 0


def test_readme_host_tier_example_runs_after_the_first():
    first, tiered = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[:2]
    namespace: dict = {}
    exec(compile(first + tiered, "README.md examples", "exec"), namespace)
    assert int(namespace["state"].step) == 1 and namespace["coll"].host_tier is not None
    assert namespace["coll"].table_stats(namespace["state"].tables)["items"]["size"] == 64
