"The notebooks are the source: they run (nbdev-test), the library and README are exported from them."
import filecmp, os, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

def _run(cmd, cwd=ROOT, timeout=1800):
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)

# Every notebook runs under nbdev-test (slow cells included) in tests/test_docs.py, whose site build executes them.

def test_library_in_sync_with_notebooks(tmp_path):
    "Running nbdev-export changes nothing in fastdet/ (notebooks and library committed together)."
    for p in ('nbs', 'fastdet'): shutil.copytree(ROOT/p, tmp_path/p, ignore=shutil.ignore_patterns('__pycache__', '.ipynb_checkpoints'))
    shutil.copy(ROOT/'pyproject.toml', tmp_path)
    r = _run([str(BIN/'nbdev-export')], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cmp = filecmp.dircmp(ROOT/'fastdet', tmp_path/'fastdet', ignore=['__pycache__'])
    def diffs(c, pre=''):
        out = [pre + f for f in c.diff_files + c.left_only + c.right_only]
        for name, sub in c.subdirs.items(): out += diffs(sub, f'{pre}{name}/')
        return out
    assert not diffs(cmp), f'nbdev-export would change fastdet/: {diffs(cmp)}; edit the notebooks and re-export'

def test_readme_in_sync_with_index():
    r = _run([sys.executable, 'scripts/make_readme.py', '--check'])
    assert r.returncode == 0, r.stdout
