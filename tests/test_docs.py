"""The README and docs/ as a user reads them: every fenced ``bash`` and
``python`` block runs as written on a CPU-only machine, from the repository
root, with this test run's Python first on PATH (so ``python`` and the console
scripts are the installed ones); ``text`` blocks (output, tables, slow or
NPU-only commands) are not run. The pages speak to users about the project:
no work log (sessions, agents, the team, issue numbers). Links between the
pages point at files that exist."""
import os
import re
import subprocess
import sys
from typing import List, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs"))
                               if f.endswith(".md"))
RUN = {"bash", "python"}
NOT_RUN = {"text"}
BLOCK_TIMEOUT_S = 240  # a 2-rank job on two loaded cores; blocks are meant to take well under a minute
# Words of a work log, not of a user's page.
WORK_LOG = re.compile(r"\bsessions?\b|\bagents?\b(?<!elastic agent)|\bthe team\b|\bteam's\b|\bissue\s*#?\d+|"
                      r"\bworkplace\b|\bhelpers? (?:session|job)s?\b|\bdone when\b", re.I)
FENCE = re.compile(r"^```(\S*)\s*$")


def blocks(page: str) -> List[Tuple[int, str, str]]:
    """(line number, language, code) of each fenced block of ``page``."""
    found, lang, start, code = [], None, 0, []
    with open(os.path.join(ROOT, page)) as f:
        for number, line in enumerate(f, 1):
            fence = FENCE.match(line.rstrip("\n"))
            if lang is None and fence:
                lang, start, code = fence.group(1), number, []
            elif lang is not None and line.rstrip("\n") == "```":
                found.append((start, lang, "".join(code)))
                lang = None
            elif lang is not None:
                code.append(line)
    assert lang is None, f"{page}: the block opened at line {start} is never closed"
    return found


ALL_BLOCKS = [(page, line, lang, code) for page in PAGES for line, lang, code in blocks(page)]
RUNNABLE = [b for b in ALL_BLOCKS if b[2] in RUN]


def test_every_block_says_whether_it_runs():
    untagged = [f"{page}:{line} ({lang or 'no language'})" for page, line, lang, _ in ALL_BLOCKS
                if lang not in RUN | NOT_RUN]
    assert not untagged, f"fenced blocks must be bash, python (run by this test) or text (not run): {untagged}"


def test_no_indented_code_blocks():
    """An indented block would escape this test: pages use fenced blocks only."""
    bad = []
    for page in PAGES:
        inside, previous_blank, in_list = False, True, False
        with open(os.path.join(ROOT, page)) as f:
            for number, line in enumerate(f, 1):
                if FENCE.match(line.rstrip("\n")):
                    inside = not inside
                elif not inside:
                    if re.match(r"\s*([*-]|\d+\.)\s", line):
                        in_list = True
                    elif not line.strip():
                        pass
                    elif not line.startswith(" "):
                        in_list = False
                    if line.startswith("    ") and line.strip() and previous_blank and not in_list:
                        bad.append(f"{page}:{number}")
                previous_blank = not line.strip()
    assert not bad, f"indented code blocks (use a fenced bash/python/text block): {bad}"


@pytest.mark.parametrize("page", PAGES)
def test_page_speaks_about_the_project_only(page):
    with open(os.path.join(ROOT, page)) as f:
        text = f.read()
    hits = [m.group(0) for m in WORK_LOG.finditer(text)]
    assert not hits, f"{page} speaks of its own making: {hits}"


@pytest.mark.parametrize("page", PAGES)
def test_links_point_at_files(page):
    with open(os.path.join(ROOT, page)) as f:
        text = f.read()
    base = os.path.dirname(os.path.join(ROOT, page))
    missing = [target for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
               if "://" not in target and not os.path.exists(os.path.join(base, target))]
    assert not missing, f"{page} links to missing files: {missing}"


def test_readme_is_short_and_in_a_users_order():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    assert text.count("\n") <= 250
    headings = re.findall(r"(?m)^## (.+)$", text)
    order = ["Install", "Quick start", "Launching", "The emulated NPU", "MindSpore fronts", "Tools"]
    assert [h for h in headings if h in order] == order, headings


@pytest.mark.parametrize("page, line, lang, code", RUNNABLE, ids=[f"{p}:{n}" for p, n, _, _ in RUNNABLE])
def test_block_runs_as_written(page, line, lang, code, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPU_SYNCBN_")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    cmd = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    assert proc.returncode == 0, f"{page}:{line} failed:\n{code}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n" \
                                 f"{proc.stderr[-3000:]}"
