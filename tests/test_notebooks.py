"The notebooks are the source: they run (nbdev-test), the library and README are exported from them."
import filecmp, os, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

def _run(cmd, cwd=ROOT, timeout=1800):
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)

def test_notebooks_run():
    "Every notebook's cells, the `slow` ones included, run without error under nbdev-test."
    nbs = sorted(p.name for p in (ROOT/'nbs').rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts)
    assert len(nbs) >= 4, f'expected the module notebooks, found {nbs}'
    r = _run([str(BIN/'nbdev-test'), '--flags', 'slow', '--do-print', '--n-workers', '2'])
    out = r.stdout + r.stderr
    assert 'No files were eligible' not in out
    assert r.returncode == 0, out[-6000:]
    for nb in nbs: assert f'Completed' in out and nb in out, f'{nb} did not run:\n{out[-3000:]}'

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
