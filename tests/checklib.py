"""Shared by the standalone check scripts that meson runs: tests/check-service.py,
tests/system/check-package.py and tests/system/boot-test.py (the latter two
import it from the parent directory). Each check prints "ok: WHAT" or raises
Failed(WHAT), which the script's main() turns into "FAIL: WHAT" and exit 1.
"""
import os
import subprocess
import sys


class Failed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)
    print("ok:", what, flush=True)


def run(cmd, **kw):
    """Run cmd (echoed as "+ cmd"), output captured as text."""
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def find_deb(src, out):
    """The .deb to test: the script's second argument, else $PGSWEEPER_DEB,
    else one tools/build-deb builds into the directory out."""
    deb = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("PGSWEEPER_DEB", "")
    if deb:
        return os.path.abspath(deb)
    r = subprocess.run(["bash", os.path.join(src, "tools", "build-deb"), out], stdout=subprocess.PIPE, text=True)
    check(r.returncode == 0, "tools/build-deb built the package")
    return r.stdout.strip().splitlines()[-1]
