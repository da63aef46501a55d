"""The README's example runs as written and stays within 20 lines."""

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
