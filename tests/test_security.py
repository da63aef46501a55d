"""Inputs cannot run code (issue 17, item 5): no module of the package, the
models or the experiments reads a code-executing format (pickle and its
kin, yaml.load, eval/exec) or hands a string to a shell; and the
multi-process coordinator listens only on the address it is given, not on
every interface (it has no authentication)."""

import ast
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("jax_hypereca", "models", "experiments", "tools")
           for p in sorted((ROOT / d).rglob("*.py"))]
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
UNSAFE_CALLS = {"eval", "exec", "os.system", "os.popen", "yaml.load", "yaml.unsafe_load",
                "torch.load", "pd.read_pickle", "pandas.read_pickle"}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return ""


def _findings(path: pathlib.Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        where = f"{path.name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            out += [f"{where}: imports {n}" for n in names
                    if n.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.Call):
            called = _name(node.func)
            if called in UNSAFE_CALLS:
                out.append(f"{where}: calls {called}")
            for kw in node.keywords:
                true = isinstance(kw.value, ast.Constant) and kw.value.value is True
                if kw.arg in ("shell", "allow_pickle") and true:
                    out.append(f"{where}: {called}({kw.arg}=True)")
    return out


def test_no_source_reads_a_code_executing_format_or_uses_a_shell():
    assert len(SOURCES) > 50
    found = [f for p in SOURCES for f in _findings(p)]
    assert not found, "\n".join(found)


def test_the_scan_sees_what_it_refuses(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\nimport numpy as np\nnp.load('x', allow_pickle=True)\n"
                   "import subprocess\nsubprocess.run('ls', shell=True)\neval('1')\n")
    assert sorted(_findings(bad)) == [
        "bad.py:1: imports pickle", "bad.py:3: np.load(allow_pickle=True)",
        "bad.py:5: subprocess.run(shell=True)", "bad.py:6: calls eval"]


_COORDINATOR = textwrap.dedent("""
    import sys
    import jax
    from models import peers
    address = sys.argv[1]
    peers.initialize(coordinator=address, bind=address, num_processes=1, process_id=0,
                     peer_timeout_s=5)
    print("LISTENING", flush=True)
    sys.stdin.readline()
    peers.stop_watch()
    jax.distributed.shutdown()
""")


def _listeners(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on `port` (/proc/net)."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in open(table).read().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:  # 0A: LISTEN
                out.add(addr)
    return out


def test_the_coordinator_listens_only_where_it_is_told():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-c", _COORDINATOR, f"127.0.0.1:{port}"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("LISTENING"):
                break
        assert lines and lines[-1].startswith("LISTENING"), "".join(lines)[-3000:]
        # 127.0.0.1 in /proc/net's byte order, as IPv4 or IPv4-mapped IPv6;
        # never 0.0.0.0 or the IPv6 any-address (every interface)
        got = _listeners(port)
        assert got and got <= {"0100007F", "0000000000000000FFFF00000100007F"}, got
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
