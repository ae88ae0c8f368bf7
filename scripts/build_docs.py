#!/usr/bin/env python
"""Build the documentation site from nbs/ into docs/, offline, without Quarto.

nbdev renders its sites with Quarto, which no registry here carries. This keeps nbdev's own processing and swaps
only the renderer:
1. copy the project to a scratch folder and execute its notebooks there (`nbdev-test --save`), so examples show
   their outputs (`slow` cells stay unexecuted unless --slow). The tutorials' trained detectors (`shapes_detector`: the
   main job, about 3 minutes; `efficientdet_shapes_detector`: the EfficientDet page's, about 3 minutes) are trained
   first, once, into `$FASTDET_CACHE` (default: a folder of this build; the test suite shares its session's), and
   fastai's training table renders as HTML, as Jupyter shows it (an IPython startup file of this build selects
   fastprogress's notebook bars; only the final table of each fit is kept);
2. nbdev's `proc_nbs` applies the directives (hidden cells dropped, `show_doc` rendered as markdown API entries,
   front matter from the title cell) into `_proc/`;
3. the processed notebooks are made plain nbformat (nbdev's `has_sd` cell key removed, Quarto-only syntax turned
   into what mkdocs understands, `echo: false` cells tagged so their input is hidden), renamed to their nbdev page
   names (`boxes.ipynb` -> boxes.html, so nbdev's cross-links resolve), and rendered by mkdocs-material +
   mkdocs-jupyter into a static site.

Usage: python scripts/build_docs.py [--out docs] [--slow] [--no-exec]

The docs test (tests/test_docs.py) runs it with --slow: that build is also the suite's nbdev-test of every notebook.
"""
import argparse, json, os, re, shutil, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
_DIRECTIVE = re.compile(r'^\s*#\|\s*(.*)$')

def _front_matter(cell):
    "Title, description and output file from nbdev's raw front-matter cell (YAML: quoted strings unquoted, as Quarto reads them)."
    import yaml
    m = re.match(r'^\s*---\s*\n(.*?)\n---', ''.join(cell['source']), re.S)
    meta = yaml.safe_load(m.group(1)) if m else {}
    meta = {k: re.sub(r'\s+', ' ', str(v)).strip() for k, v in (meta or {}).items() if v is not None}
    return meta.get('title', ''), meta.get('description', ''), meta.get('output-file', '')

def _clean_md(s, prefix):
    s = re.sub(r'\{target="_blank"[^}]*\}', '', s)  # Quarto link attributes
    s = s.replace('https://fastdet.github.io/fastdet/', prefix)  # nbdev doc links -> this site
    return s

_NB_BARS = """# fastdet's docs build: fastai's HTML training table, as Jupyter shows it (execnb's shell is not Jupyter's)
def _notebook_bars(*args):  # before every cell: fastai's module may have been imported (with the console bars) before this ran
    import sys, fastprogress.fastprogress as fp
    fp.master_bar, fp.progress_bar = fp.NBMasterBar, fp.NBProgressBar
    p = sys.modules.get('fastai.callback.progress')
    if p is not None: p.master_bar, p.progress_bar = fp.NBMasterBar, fp.NBProgressBar
_notebook_bars()
get_ipython().events.register('pre_run_cell', _notebook_bars)
import fastdet  # it silences torch's deprecation of the `torch.jit.script` fastai's layers use on import, which a page importing fastai first would show
"""

# nbdev's processing, with its doc links reaching fastai's docs (`Learner`, `DataBlock`, `Learner.fine_tune`, ...), torchvision's,
# effdet's, timm's and pycocotools' (`batched_nms`, `AnchorLabeler`, `COCOeval`: `OTHERS`) and
# the names a reader means: `predict`, `learn.predict` and `show_results` are `DetLearner`'s, `export` is fastai's
# `Learner.export` (not the command functions of fastdet.commands, which the prose calls `fastdet predict`)
_PROC = r"""
import nbdev.processors as P, nbdev.doclinks as D
_TV, _GH = 'https://pytorch.org/vision/stable/', 'https://github.com/'
_EFFDET, _COCOAPI = _GH + 'rwightman/efficientdet-pytorch/blob/master/effdet/', _GH + 'cocodataset/cocoapi/blob/master/PythonAPI/pycocotools/'
OTHERS = {  # what the pages name from the libraries fastdet builds on, which publish no nbdev index: their docs, else their source
    **{n: f'{_TV}models/generated/torchvision.models.detection.{n}.html' for n in ('ssdlite320_mobilenet_v3_large', 'ssd300_vgg16')},
    **{n: f'{_TV}generated/torchvision.ops.{n}.html' for n in ('box_iou', 'batched_nms', 'nms', 'box_convert', 'clip_boxes_to_image')},
    'RandomIoUCrop': f'{_TV}generated/torchvision.transforms.v2.RandomIoUCrop.html',
    'SSDMatcher': _GH + 'pytorch/vision/blob/main/torchvision/models/detection/_utils.py',
    'SSD.compute_loss': _GH + 'pytorch/vision/blob/main/torchvision/models/detection/ssd.py',
    'ModelEmaV3': _GH + 'huggingface/pytorch-image-models/blob/main/timm/utils/model_ema.py',
    'AnchorLabeler': _EFFDET + 'anchors.py', 'AnchorLabeler.batch_label_anchors': _EFFDET + 'anchors.py',
    'DetBenchTrain': _EFFDET + 'bench.py', 'DetBenchPredict': _EFFDET + 'bench.py', 'effdet.create_model': _EFFDET + 'factory.py',
    **{n: _COCOAPI + 'cocoeval.py' for n in ('COCOeval', 'COCOeval.evaluate', 'COCOeval.evaluateImg', 'COCOeval.accumulate', 'COCOeval.summarize')},
    'COCO': _COCOAPI + 'coco.py', 'COCO.loadRes': _COCOAPI + 'coco.py',
    'onnxruntime': 'https://onnxruntime.ai/docs/api/python/api_summary.html',
}
class Lookup(D.NbdevLookup):
    MEANT = {'predict': 'DetLearner.predict', 'predict_batch': 'DetLearner.predict_batch', 'show_results': 'DetLearner.show_results',
             'export_onnx': 'DetLearner.export_onnx', 'export': 'Learner.export', 'fine_tune': 'Learner.fine_tune',
             'fit_one_cycle': 'Learner.fit_one_cycle', 'lr_find': 'Learner.lr_find',
             **{f'from_{f}': f'DetDataLoaders.from_{f}' for f in ('coco', 'voc', 'yolo', 'csv', 'records')}}
    def __init__(self, *args, **kwargs): super().__init__(strip_libs='fastdet fastai')
    def __getitem__(self, s):
        if s.startswith('learn.'): s = s[len('learn.'):]
        s = self.MEANT.get(s, s)
        other = OTHERS.get(s[len('torchvision.ops.'):] if s.startswith('torchvision.ops.') else s)
        return other or super().__getitem__(s) or (super().__getitem__('Learner.' + s.split('.', 1)[1]) if s.startswith('DetLearner.') else None)
P.NbdevLookup = Lookup

# API entries as fastai's: `class`/`def`, the signature without its comments, then a table of the parameters
import inspect, re, nbdev.showdoc as S
from fastcore.docments import DocmentTbl
def _signature(name, sym, sig, width=100):
    kind = 'class' if inspect.isclass(sym) else 'def'
    if sig is None: return f'{kind} {name}(...)'
    ps = [str(p).replace(': ', ':').replace(' = ', '=') for p in sig.parameters.values() if p.name != 'self']
    ret = '' if sig.return_annotation is inspect.Signature.empty else '->' + inspect.formatannotation(sig.return_annotation)
    one = f"{kind} {name}({', '.join(ps)}){ret}"
    return one if len(one) <= width else f"{kind} {name}(\n" + ''.join(f'    {p},\n' for p in ps) + f"){ret}"
class TableRenderer(S.BasicMarkdownRenderer):
    def _repr_markdown_(self):
        md = super()._repr_markdown_()
        code = f"```python\n{_signature(self.nm.rsplit('.', 1)[-1], self.sym, self.sig)}\n```"
        md = re.sub(r'```python\n.*?\n```', lambda m: code, md, count=1, flags=re.S)
        if self.sig is not None and [p for p in self.sig.parameters if p != 'self']:
            try: tbl = DocmentTbl(self.sym)._repr_markdown_()
            except Exception: tbl = ''
            md += '\n\n' + tbl.replace('| NoneType | None |', '|  | None |')  # (no annotation, default None: the type is not `NoneType`)
        return md
S.BasicMarkdownRenderer = TableRenderer

from nbdev.serve import proc_nbs; proc_nbs(n_workers=0)
"""

def _is_bar(o)->bool:
    "A display of fastprogress (its bars, its table, its style sheet)."
    html = ''.join(o.get('data', {}).get('text/html', ''))
    return o.get('output_type') == 'display_data' and ('class="fastprogress"' in html or '<progress' in html or 'progress {' in html or not html.strip() and 'text/html' in o.get('data', {}))

_BAR_LINE = re.compile(r'^\s*(?:Epoch \d+/\d+ :.*|\|[█-]*\|\s+[\d.]+% \[.*|█+)?\s*$')

def _console_table(text:str)->str:
    "Text printed by fastprogress's console bars (where a notebook's bars were the console's after all) without the bars: the table's lines."
    return '\n'.join(l.replace('█', '') for l in text.replace('\r', '\n').split('\n') if not _BAR_LINE.match(l)) + ('\n' if text.endswith('\n') else '')

def _final_tables(outputs:list)->list:
    "fastprogress's displays (every update is a new output outside Jupyter) reduced to each fit's final training table."
    out = []
    for i, o in enumerate(outputs):
        if o.get('output_type') == 'stream' and ('█' in ''.join(o.get('text', '')) or '% [' in ''.join(o.get('text', ''))):
            text = _console_table(''.join(o['text']))
            if text.strip(): out.append(dict(o, text=text))
            continue
        if not _is_bar(o): out.append(o); continue
        html = ''.join(o['data']['text/html'])  # each fit's last display is its table without bars
        if 'class="fastprogress"' in html and '<progress' not in html: out.append(dict(o, data={'text/html': html}))
    return out

def _class_names()->set:
    "fastdet's public classes (each module's `__all__`), whose API entries nbdev's signature shows as `def Name(`."
    import importlib, inspect
    sys.path.insert(0, str(ROOT))
    from fastdet._modidx import d
    return {n for mod in d['syms'] for m in [importlib.import_module(mod)] for n in getattr(m, '__all__', []) if inspect.isclass(getattr(m, n, None))}

def _class_signature(md:str, classes:set)->str:
    "`def Name(` -> `class Name(` in an API entry of a class."
    return re.sub(r'(```python\s*\n\s*)def (\w+)\(', lambda m: f'{m.group(1)}class {m.group(2)}(' if m.group(2) in classes else m.group(0), md, count=1)

def _plain(nb_path, out_dir, classes=frozenset()):
    "Make one processed notebook plain nbformat for mkdocs-jupyter; returns (page file, title)."
    nb = json.loads(Path(nb_path).read_text())
    cells, title, desc, page = [], '', '', ''
    for c in nb['cells']:
        if c.pop('has_sd', None):  # (nbdev's key, which nbformat rejects) an API entry: as a markdown cell, so its heading is in the page's contents
            md = [''.join(o['data']['text/markdown']) for o in c.get('outputs', []) if 'text/markdown' in o.get('data', {})]
            if c['cell_type'] == 'code' and len(md) == 1:
                cells.append(dict(cell_type='markdown', metadata={}, source=_class_signature(_clean_md(md[0], ''), classes), id=c.get('id', 'sd')))
                continue
        c.setdefault('metadata', {}).pop('execution', None)
        if c['cell_type'] == 'raw' and ''.join(c['source']).lstrip().startswith('---'):
            title, desc, page = _front_matter(c)
            md = f'# {title}\n\n' + (f'> {desc}\n' if desc else '')
            cells.append(dict(cell_type='markdown', metadata={}, source=md, id=c.get('id', 'fm')))
            continue
        if c['cell_type'] == 'markdown':
            c['source'] = _clean_md(''.join(c['source']), '')
            if 'WARNING: THIS FILE WAS AUTOGENERATED' in c['source']: continue
        if c['cell_type'] == 'code':
            src = ''.join(c['source'])
            dirs = [m.group(1) for l in src.splitlines() if (m := _DIRECTIVE.match(l))]
            if any(d.startswith('echo: false') or d.startswith('echo:false') for d in dirs):
                c['metadata']['tags'] = ['hide_input']
            c['source'] = '\n'.join(l for l in src.splitlines() if not _DIRECTIVE.match(l))
            c['outputs'] = _final_tables(c.get('outputs', []))
            for o in c.get('outputs', []):
                if 'text/markdown' in o.get('data', {}):
                    o['data']['text/markdown'] = _clean_md(''.join(o['data']['text/markdown']), '')
                    o['data'].pop('text/plain', None)
        cells.append(c)
    nb['cells'] = cells
    name = Path(page).with_suffix('.ipynb').name if page else Path(nb_path).name
    if Path(nb_path).name == 'index.ipynb': name = 'index.ipynb'
    (out_dir/name).write_text(json.dumps(nb))
    return name, title or Path(nb_path).stem

EXTRA_CSS = """.jupyter-wrapper .jp-InputPrompt, .jupyter-wrapper .jp-OutputPrompt { display: none !important; }  /* no In[ ]/Out[ ] labels */
/* code (in prose too) and outputs keep their lines and indentation: a long line scrolls sideways, with a visible bar */
.jp-Cell pre, .highlight pre, .jp-RenderedMarkdown pre, .jp-OutputArea-output pre { white-space: pre; overflow-x: auto; }
"""

# mkdocs-material's offline plugin inlines the search index for pages opened from disk, but its worker needs a shim
# (`Worker` cannot load from file://) that the plugin fetches from unpkg.com; this one runs the worker script in a
# hidden iframe instead, messages passed as events (the plugin skips its own when a polyfill's name has `iframe-worker`).
WORKER_SHIM = """(function () {
  if (location.protocol !== 'file:') return;
  class IFrameWorker extends EventTarget {
    constructor(url) {
      super();
      const frame = document.createElement('iframe');
      frame.style.display = 'none';
      (document.body || document.documentElement).appendChild(frame);
      const inner = frame.contentWindow, outer = this, queue = [];
      let ready = false;
      inner.postMessage = data => setTimeout(() => outer.dispatchEvent(new MessageEvent('message', {data})));
      inner.importScripts = () => { throw new Error('importScripts is not available to the offline search worker'); };
      this._send = data => inner.dispatchEvent(new inner.MessageEvent('message', {data}));
      this._flush = () => { ready = true; queue.splice(0).forEach(this._send); };
      this.postMessage = data => ready ? setTimeout(() => this._send(data)) : queue.push(data);
      const script = inner.document.createElement('script');
      script.src = url;
      script.onload = this._flush;
      script.onerror = () => this.dispatchEvent(new Event('error'));
      inner.document.head.appendChild(script);
    }
    terminate() {}
  }
  window.Worker = IFrameWorker;
})();
"""

def _relative_links(site:Path):
    "Make the absolute links mkdocs writes into 404.html relative, so the site works opened from disk (no site_url)."
    for page in site.glob('*.html'):
        html = page.read_text()
        fixed = re.sub(r'((?:href|src|action)=")/(?!/)', r'\1', html)
        if fixed != html: page.write_text(fixed)

# `DetLearner` methods that are fastai's own (documented there): nbdev links them to this site's learner page
FASTAI_LEARNER = {'fit': 'https://docs.fast.ai/learner.html#learner.fit', 'fine_tune': 'https://docs.fast.ai/callback.schedule.html#learner.fine_tune',
                  'fit_one_cycle': 'https://docs.fast.ai/callback.schedule.html#learner.fit_one_cycle', 'export': 'https://docs.fast.ai/learner.html#learner.export',
                  'distrib_ctx': 'https://docs.fast.ai/distributed.html#learner.distrib_ctx', 'lr_find': 'https://docs.fast.ai/callback.schedule.html#learner.lr_find'}

def _fix_anchors(site:Path)->list:
    """Make the site's in-page anchors and its headings' ids agree: nbdev links a method as `#class.method` where the
    page's id is `classmethod`; mkdocs-jupyter's table of contents cuts a heading's id at its first code span; fastai's
    own `Learner` methods go to fastai's docs; links to private names go to their page. Returns what still does not resolve."""
    pages = {p.name: p.read_text() for p in site.glob('*.html')}
    ids = {n: set(re.findall(r'\sid="([^"]+)"', h)) for n, h in pages.items()}
    left = []
    def fix(page, m):
        target, _, anchor = m.group(1).partition('#')
        t = target or page
        if t not in ids or anchor in ids[t]: return m.group(0)
        if anchor.replace('.', '') in ids[t]: return f'href="{target}#{anchor.replace(".", "")}"'
        def words_in(i):  # the anchor's words, in order, among the id's (the id has the code spans' words too)
            it = iter(i.split('-'))
            return all(w in it for w in anchor.split('-'))
        longer = [i for i in ids[t] if '-' in anchor and words_in(i)]
        if len(longer) == 1: return f'href="{target}#{longer[0]}"'
        cls, _, meth = anchor.rpartition('.')
        if cls == 'detlearner' and meth in FASTAI_LEARNER: return f'href="{FASTAI_LEARNER[meth]}"'
        if cls and cls.replace('.', '') in ids[t]: return f'href="{target}#{cls.replace(".", "")}"'  # a method without an entry of its own: its class's
        if anchor.startswith('_'): return f'href="{t}"'
        left.append(f'{page}: {m.group(1)}')
        return m.group(0)
    for name, html in pages.items():
        fixed = re.sub(r'href="((?!https?:|mailto:)[^"#]*#[^"]+)"', lambda m: fix(name, m), html)
        if fixed != html: (site/name).write_text(fixed)
    return left

def _symbol_index(src:Path)->str:
    "Write `api_index.md`: every public symbol (each module's `__all__`) with its page and the first line of its docstring, and a filter box that works opened from disk (no search worker needed); returns the page's file name."
    import html, importlib
    sys.path.insert(0, str(ROOT))
    from fastdet._modidx import d
    rows = []
    for mod, syms in d['syms'].items():
        m = importlib.import_module(mod)
        for name in getattr(m, '__all__', []):
            url = syms.get(f'{mod}.{name}', (None,))[0]
            if url is None: continue
            doc = (getattr(getattr(m, name, None), '__doc__', None) or '').strip().split('\n')[0]
            doc = re.sub(r'`([^`]+)`', r'<code>\1</code>', html.escape(doc))
            rows.append((name.lower(), f'<tr><td><a href="{url}"><code>{html.escape(name)}</code></a></td><td style="white-space: nowrap"><code>{mod}</code></td><td>{doc}</td></tr>'))
    body = '\n'.join(r for _, r in sorted(rows))
    (src/'api_index.md').write_text(f"""# API index

Every public name of fastdet, with its module and what it is. Type to filter (this works opened from disk, too):

<input id="symbol-filter" type="search" placeholder="Filter, e.g. COCOMetric" style="width: 100%; padding: .4em; font-size: 1em">

<table id="symbols"><thead><tr><th>Name</th><th>Module</th><th>What it is</th></tr></thead><tbody>
{body}
</tbody></table>

<script>
document.getElementById('symbol-filter').addEventListener('input', e => {{
  const q = e.target.value.toLowerCase();
  document.querySelectorAll('#symbols tbody tr').forEach(r => {{ r.style.display = r.textContent.toLowerCase().includes(q) ? '' : 'none'; }});
}});
</script>
""")
    return 'api_index.md'

def build(out=ROOT/'docs', execute=True, slow=False):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copytree(ROOT/'nbs', tmp/'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints', '_proc'))
        shutil.copytree(ROOT/'fastdet', tmp/'fastdet', ignore=shutil.ignore_patterns('__pycache__'))
        shutil.copy(ROOT/'pyproject.toml', tmp)
        if execute:
            env = dict(os.environ, IPYTHONDIR=str(tmp/'ipython'))
            env.setdefault('FASTDET_CACHE', str(tmp/'cache'))
            (tmp/'ipython'/'profile_default'/'startup').mkdir(parents=True)
            (tmp/'ipython'/'profile_default'/'startup'/'00-fastai-html-table.py').write_text(_NB_BARS)
            r = subprocess.run([sys.executable, '-c', 'from fastdet.commands import shapes_detector_file, efficientdet_shapes_detector; shapes_detector_file(); efficientdet_shapes_detector()'], cwd=tmp, env=env, capture_output=True, text=True)
            if r.returncode: raise RuntimeError(f"training the tutorials' detectors failed:\n{(r.stdout + r.stderr)[-4000:]}")
            cmd = [str(BIN/'nbdev-test'), '--save', '--n-workers', '2'] + (['--flags', 'slow'] if slow else [])
            r = subprocess.run(cmd + ['--do-print'], cwd=tmp, env=env, capture_output=True, text=True)
            log = r.stdout + r.stderr
            if r.returncode: raise RuntimeError(f'executing the notebooks failed:\n{log[-6000:]}')
            n_run = log.count('- Completed ')
            if n_run == 0 or 'No files were eligible' in log: raise RuntimeError(f'nbdev-test ran no notebook:\n{log[-2000:]}')
            print(f'executed {n_run} notebooks with nbdev-test')
        r = subprocess.run([sys.executable, '-c', _PROC],
                           cwd=tmp, capture_output=True, text=True)
        if r.returncode: raise RuntimeError(f'nbdev processing failed:\n{r.stderr[-4000:]}')
        src = tmp/'site_src'; src.mkdir()
        (src/'extra.css').write_text(EXTRA_CSS)
        (src/'iframe-worker-shim.js').write_text(WORKER_SHIM)
        classes = _class_names()
        pages = [_plain(p, src, classes) for p in sorted((tmp/'_proc').rglob('*.ipynb'))]
        api = [(t, n) for n, t in pages if n != 'index.ipynb' and not n.startswith('tutorial')]
        tuts = [(t, n) for n, t in pages if n.startswith('tutorial')]
        index = _symbol_index(src)
        nav = [{'Home': 'index.ipynb'}] + ([{'Tutorials': [{t: n} for t, n in tuts]}] if tuts else []) + [{'API': [{t: n} for t, n in api] + [{'API index': index}]}]
        cfg = dict(site_name='fastdet', site_description='Single-shot object detection as first-class fastai citizens',
                   docs_dir=str(src), site_dir=str(Path(out).resolve()), use_directory_urls=False, nav=nav,
                   theme=dict(name='material', font=False, features=['navigation.sections', 'navigation.footer', 'toc.follow']),
                   plugins=[{'search': {}}, {'offline': {}}, {'mkdocs-jupyter': dict(include_source=False, execute=False, ignore_h1_titles=True,
                            remove_tag_config=dict(remove_input_tags=['hide_input']))}],
                   markdown_extensions=['tables', 'admonition', 'toc'], extra_css=['extra.css'],
                   extra=dict(polyfills=['iframe-worker-shim.js']))
        import yaml
        (tmp/'mkdocs.yml').write_text(yaml.safe_dump(cfg, sort_keys=False))
        if Path(out).exists(): shutil.rmtree(out)
        r = subprocess.run([str(BIN/'mkdocs'), 'build', '-q', '-f', str(tmp/'mkdocs.yml')], capture_output=True, text=True)
        if r.returncode: raise RuntimeError(f'mkdocs failed:\n{r.stderr[-4000:]}')
        _relative_links(Path(out))
        left = _fix_anchors(Path(out))
        if left: print(f"anchors that resolve nowhere ({len(left)}):\n  " + '\n  '.join(left))
    return Path(out)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(ROOT/'docs'))
    ap.add_argument('--slow', action='store_true', help='also execute cells marked slow')
    ap.add_argument('--no-exec', action='store_true', help="don't execute the notebooks (no example outputs)")
    a = ap.parse_args()
    out = build(Path(a.out), execute=not a.no_exec, slow=a.slow)
    print(f'docs built into {out}: open {out/"index.html"}')
