"The package's layers: every module imports only modules below it, and `fastdet.all` reaches every public name."
import ast, importlib
from pathlib import Path
import pytest

PKG = Path(__file__).resolve().parent.parent/'fastdet'
# bottom to top: a module may import only the modules before it
LAYERS = ['files', 'options', 'boxes',
          'data.records', 'data.shapes', 'data.readers', 'data.tiles', 'data.core', 'data.augment', 'data.labels', 'data.sampling',
          'anchors.ssd', 'anchors.efficientdet',
          'models.ssd', 'models.efficientdet',
          'losses.ssd', 'losses.efficientdet', 'evaluation',
          'metrics', 'thresholds', 'selection', 'ema', 'families', 'priors', 'prediction', 'export', 'slicing', 'distrib', 'learner', 'modelfile', 'interpret', 'review', 'tracking', 'deploy', 'recipes', 'commands', 'cli']
NOT_LAYERED = {'__init__', '_modidx', 'all'}

def _module(path:Path)->str:
    return '.'.join(path.relative_to(PKG).with_suffix('').parts)

def fastdet_imports(source:str, module:str)->set:
    "The fastdet modules `source` (the code of `fastdet.<module>`) imports, as names like 'data.core'."
    pkg = module.split('.')[:-1]
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - (node.level - 1)] + (node.module.split('.') if node.module else [])
            elif node.module and node.module.split('.')[0] == 'fastdet': base = node.module.split('.')[1:]
            else: continue
            name = '.'.join(base)
            # `from . import x` / `from fastdet.data import core` import modules by name
            subs = {f'{name}.{a.name}' if name else a.name for a in node.names}
            out |= {s for s in subs if s in LAYERS} or ({name} if name else set())
        elif isinstance(node, ast.Import):
            out |= {'.'.join(a.name.split('.')[1:]) for a in node.names if a.name.split('.')[0] == 'fastdet' and '.' in a.name}
    return out

def violations(source:str, module:str)->list:
    "The imports of `module` that are not below it in `LAYERS`."
    rank = LAYERS.index(module)
    return sorted(m for m in fastdet_imports(source, module) if m and m != 'fastdet' and (m not in LAYERS or LAYERS.index(m) >= rank))

def test_every_module_has_a_layer():
    mods = {_module(p) for p in PKG.rglob('*.py')} - NOT_LAYERED - {m for m in (_module(p) for p in PKG.rglob('__init__.py'))}
    assert mods == set(LAYERS), f"modules without a layer: {mods - set(LAYERS)}; layers without a module: {set(LAYERS) - mods}"

@pytest.mark.parametrize('module', LAYERS)
def test_imports_only_lower_layers(module):
    src = (PKG/(module.replace('.', '/') + '.py')).read_text()
    assert not violations(src, module), f"fastdet.{module} imports {violations(src, module)}, which are not below it"

def test_the_check_catches_an_upward_import():
    assert violations("from ..learner import DetLearner\nimport torch", 'models.efficientdet') == ['learner']
    assert violations("from fastdet.losses.ssd import MultiBoxLoss", 'anchors.ssd') == ['losses.ssd']
    assert violations("from .core import DetRecord", 'data.readers') == ['data.core']
    assert violations("from ..boxes import unpad\nfrom ..anchors.ssd import match_anchors", 'losses.ssd') == []

def test_all_reaches_every_public_name():
    import fastdet.all as everything
    for m in [m for m in LAYERS if m not in ('options', 'recipes', 'commands', 'cli')]:  # the command line's names are not part of `from fastdet.all import *`
        mod = importlib.import_module(f'fastdet.{m}')
        missing = [n for n in mod.__all__ if getattr(everything, n, None) is not getattr(mod, n)]
        assert not missing, f"fastdet.all does not reach {missing} of fastdet.{m}"

def test_factories_need_only_the_class():
    "Every `DetDataLoaders.from_*` is defined in the class, as fastai's `ImageDataLoaders.from_*` are."
    from fastdet.data.core import DetDataLoaders
    for f in ('from_records', 'from_coco', 'from_voc', 'from_yolo', 'from_df', 'from_csv', 'from_shapes'):
        assert getattr(DetDataLoaders, f).__func__.__module__ == 'fastdet.data.core', f  # not patched in from elsewhere
