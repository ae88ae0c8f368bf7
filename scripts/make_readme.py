#!/usr/bin/env python
"""Write README.md from nbs/index.ipynb (nbdev's `readme_nb`), without Quarto.

nbdev renders the README with Quarto, which cannot be installed here; this does the same job for the home
notebook: markdown cells as they are, code cells as fenced Python, cells marked `#| hide` left out.
`python scripts/make_readme.py --check` exits 1 when README.md is out of date.
"""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def readme_text(nb_path=ROOT/'nbs'/'index.ipynb') -> str:
    nb = json.loads(Path(nb_path).read_text())
    parts = []
    for c in nb['cells']:
        src = ''.join(c['source']).strip()
        if not src or any(l.strip().startswith(('#| hide', '#|hide')) for l in src.splitlines()): continue
        if c['cell_type'] == 'markdown': parts.append(src)
        elif c['cell_type'] == 'code':
            code = '\n'.join(l for l in src.splitlines() if not l.startswith('#|')).strip()
            if code: parts.append(f'```python\n{code}\n```')
    text = '\n\n'.join(parts) + '\n'
    # nbdev's title cell: "# Title" then "> summary" -> keep as is (GitHub renders it as a heading and a quote)
    return '<!-- generated from nbs/index.ipynb by scripts/make_readme.py: edit the notebook, not this file -->\n\n' + text

if __name__ == '__main__':
    text, out = readme_text(), ROOT/'README.md'
    if '--check' in sys.argv:
        ok = out.exists() and out.read_text() == text
        print('README.md is up to date' if ok else 'README.md is out of date: run python scripts/make_readme.py')
        sys.exit(0 if ok else 1)
    out.write_text(text); print(f'wrote {out}')
