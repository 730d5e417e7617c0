"""Builds that survive being killed, and ranks that start together.

A real build is started in a process group of its own and SIGKILLed (as a
scheduler, a timeout or the OOM killer would) once it is compiling; the next
run must finish on its own, rebuilding and saying why, instead of waiting for
a builder that is gone. Two builders started together must compile once: the
second says it waits for the first and then uses its result.

Covered: the CPU kernel library (twin_build, the same code builds the kernel
twin) and the emulated device's torch extension path
(npu_syncbn.emulation.device), there with a small extension of its own so
that the test compiles seconds, not minutes, through the same code.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILDER = os.path.join(ROOT, "npu_syncbn", "twin_build.py")
FINISH_S = 600  # generous: two cores shared with the rest of the suite


def _start(args, env=None, **kw):
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=dict(os.environ, **(env or {})), **kw)


def _kill_when(proc, ready, what, timeout=FINISH_S):
    """SIGKILL proc's whole process group once ``ready()`` holds."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"{what} ended before it could be killed:\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, f"{what} never started compiling"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _compiler_running_for(path_fragment):
    """True while a compiler process names ``path_fragment`` on its command line."""
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except (OSError, ValueError):
            continue
        if args and any(c in os.path.basename(args[0]) for c in ("g++", "c++", "cc1plus", "ninja")) \
                and any(path_fragment in a for a in args):
            return True
    return False


def test_killed_cpu_kernel_build_is_rebuilt_by_the_next_run(tmp_path):
    out = str(tmp_path / "lib")
    first = _start([sys.executable, BUILDER, "--only", "cpu", out])
    _kill_when(first, lambda: _compiler_running_for(out), "the CPU kernel build")
    assert os.path.exists(os.path.join(out, "libnpu_syncbn_cpu.so.lock"))  # left behind, as a kill leaves it
    assert not os.path.exists(os.path.join(out, "libnpu_syncbn_cpu.so"))

    again = subprocess.run([sys.executable, BUILDER, "--only", "cpu", out], cwd=ROOT, capture_output=True,
                           text=True, timeout=FINISH_S)
    assert again.returncode == 0, again.stderr
    assert "building the CPU kernels" in again.stderr and "built the CPU kernels in" in again.stderr
    assert "waiting" not in again.stderr  # nobody alive holds the lock
    import ctypes

    ctypes.CDLL(os.path.join(out, "libnpu_syncbn_cpu.so"))  # a whole library, not the killed one's half


def test_two_builders_started_together_build_once(tmp_path):
    out = str(tmp_path / "lib")
    procs = [_start([sys.executable, BUILDER, "--only", "cpu", out]) for _ in range(2)]
    logs = [p.communicate(timeout=FINISH_S)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    both = "".join(logs)
    assert both.count("npu_syncbn: building the CPU kernels (") == 1, both
    assert both.count("waiting for process") == 1, both  # the other one said whom it waits for
    assert both.count("up to date in") == 2, both


_TINY_EXTENSION = r"""
#include <torch/extension.h>
int answer() { return 42; }
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("answer", &answer); }
"""


def _device_build_script(src):
    return textwrap.dedent(f"""
        from npu_syncbn.emulation import device
        name = "npu_syncbn_kill_test_" + device.build_name([{src!r}], [])
        module = device._build(name, [{src!r}], [])
        assert module.answer() == 42
        print("LOADED", device.build_directory(name))
    """)


def test_killed_emulated_device_build_does_not_make_the_next_run_wait(tmp_path):
    """torch's extension builder keeps a lock file in the build folder while it
    builds and waits, forever, for that file to go away; a SIGKILLed build
    leaves it behind. The next run must rebuild and say so."""
    pytest.importorskip("ninja", reason="torch's extension builder needs ninja (pip install ninja)")
    src = tmp_path / "tiny.cpp"
    src.write_text(_TINY_EXTENSION)
    env = {"TORCH_EXTENSIONS_DIR": str(tmp_path / "ext"), "PYTHONPATH": ROOT}
    script = _device_build_script(str(src))
    first = _start([sys.executable, "-c", script], env=env)
    ext_dir = str(tmp_path / "ext")

    def torch_lock_taken():
        return any(os.path.exists(os.path.join(ext_dir, d, "lock")) for d in os.listdir(ext_dir)) \
            if os.path.isdir(ext_dir) else False

    _kill_when(first, lambda: torch_lock_taken() and _compiler_running_for(str(tmp_path)), "the extension build")
    assert torch_lock_taken(), "the killed build should have left torch's lock file (what used to hang)"

    again = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                           timeout=FINISH_S, env=dict(os.environ, **env))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "did not finish (killed or failed): building it again" in again.stderr, again.stderr
    assert "built the emulated npu device in" in again.stderr
    assert "LOADED" in again.stdout

    third = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                           timeout=FINISH_S, env=dict(os.environ, **env))
    assert third.returncode == 0 and "building" not in third.stderr, third.stderr  # loaded as built
