"""The console scripts declared in setup.py resolve to working mains."""
from importlib.metadata import entry_points

import pytest

SCRIPTS = ("npu-syncbn-run", "npu-syncbn-accuracy", "npu-syncbn-bench")


@pytest.mark.parametrize("name", SCRIPTS)
def test_console_script_help(name, capsys):
    found = [ep for ep in entry_points(group="console_scripts") if ep.name == name]
    assert found, f"{name} is not installed: pip install -e . declares it in setup.py"
    main = found[0].load()
    try:  # mains either return their status (what the wrapper passes to sys.exit) or exit
        code = main(["--help"])
    except SystemExit as exc:
        code = exc.code
    assert code in (0, None)
    assert "usage:" in capsys.readouterr().out
