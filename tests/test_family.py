"A detector family added from outside fastdet: one class and one `register_family` line, then every path (train, predict, save, load, ONNX) takes it; and no module outside the registry finds a family by name or type."
import ast, json
from pathlib import Path
import pytest, torch
from torch import nn
from torchvision.models.detection.ssd import SSDHead
from fastai.vision.core import imagenet_stats
import fastdet.families as families_module
from fastdet.families import DetFamily, register_family, family_of, families
from fastdet.anchors.ssd import default_boxes
from fastdet.losses.ssd import MultiBoxLoss
from fastdet.data.core import DetDataLoaders
from fastdet.learner import make_learner
from fastdet.modelfile import save_detector, load_detector
from fastdet.metrics import COCOMetric

PKG = Path(__file__).resolve().parent.parent/'fastdet'

class TinyDetector(nn.Module):
    "A stand-in detector: three strided convolutions, torchvision's SSD head on the last two maps, fastdet's default boxes."
    def __init__(self, num_classes:int, ratios=((2,), (2,))):
        super().__init__()
        self.num_classes, self.ratios = num_classes, [list(r) for r in ratios]
        conv = lambda ci, co: nn.Sequential(nn.Conv2d(ci, co, 3, 2, 1), nn.BatchNorm2d(co), nn.ReLU())
        self.body, self.c4, self.c5 = nn.Sequential(conv(3, 16), conv(16, 32)), conv(32, 32), conv(32, 32)
        self.head = SSDHead([32, 32], [2 + 2 * len(r) for r in self.ratios], num_classes + 1)
    def forward(self, x):
        f4 = self.c4(self.body(x)); f5 = self.c5(f4)
        out = self.head([f4, f5])
        anchors = default_boxes([f4.shape[-2:], f5.shape[-2:]], [.2, .5, .9], self.ratios, device=x.device)
        return out['cls_logits'], out['bbox_regression'], anchors.as_subclass(torch.Tensor).expand(len(x), -1, -1)

class TinyFamily(DetFamily):
    "The stand-in family: all it knows, in one place."
    name = 'Tiny'
    def archs(self): return ['tiny_det']
    def default_size(self, arch): return 64
    def create_model(self, arch, num_classes, hw, weights=None, **kwargs):
        m = TinyDetector(num_classes, **kwargs)
        if weights is not None: m.load_state_dict(torch.load(weights, weights_only=True))
        return m
    def stats(self, model, arch): return imagenet_stats
    def loss(self, model, arch, **settings): return MultiBoxLoss(**{'score_thresh': .05, **settings})
    def loss_settings(self, lf): return dict(score_thresh=lf.score_thresh, nms_thresh=lf.nms_thresh, max_det=lf.max_det)
    def split(self, m): return [list(m.body.parameters()) + list(m.c4.parameters()) + list(m.c5.parameters()), list(m.head.parameters())]

@pytest.fixture
def tiny():
    before = families()
    yield register_family(TinyFamily())
    families_module._FAMILIES[:] = before  # the other tests see the built-in families only

def test_a_family_registered_from_outside_trains_predicts_saves_loads_and_exports(tiny, tmp_path):
    pytest.importorskip('onnxruntime')
    assert family_of('tiny_det') is tiny
    dls = DetDataLoaders.from_shapes(n=48, size=(64, 96), render_size=96, bs=8, seed=0, num_workers=0)  # (h, w): not square
    learn = make_learner(dls, 'tiny_det', metrics=[COCOMetric('AP50')], model_kwargs=dict(ratios=[[2], [2, 3]]))
    assert learn.family is tiny and learn.recipe == dict(arch='tiny_det', model_kwargs=dict(ratios=[[2], [2, 3]]))
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, 1e-2)
    assert learn.recorder.values and 0 <= learn.recorder.values[-1][-1] <= 1  # trained one epoch, validated with COCO AP50
    files = [r.file for r in dls.valid.items[:4]]
    with learn.no_bar(): dets = learn.predict_batch(files, bs=2, num_workers=0)
    assert sum(len(b) for b, _, _ in dets) > 0
    save_detector(learn, tmp_path/'tiny.pth')
    back = load_detector(tmp_path/'tiny.pth')
    assert back.family is tiny and back.input_spec == learn.input_spec and back.loss_func.score_thresh == .05
    with back.no_bar(): again = back.predict_batch(files, bs=2, num_workers=0)
    for (b1, n1, s1), (b2, n2, s2) in zip(dets, again): assert torch.equal(b1, b2) and n1 == n2 and torch.equal(s1, s2)
    from fastdet.deploy import load_onnx
    onnx = load_onnx(learn.export_onnx(tmp_path/'tiny.onnx'))
    assert json.loads(onnx.session.get_modelmeta().custom_metadata_map['fastdet'])['arch'] == 'tiny_det'
    for (b1, n1, s1), (b2, n2, s2) in zip(dets, onnx.predict_batch(files, bs=2, num_workers=0)):
        assert len(b1) == len(b2) and n1 == n2 and torch.allclose(b1, b2, atol=1e-2) and torch.allclose(s1, s2, atol=1e-4)
    # an ONNX file of the previous format (`size` as (w, h), `normalize`) runs the same
    import onnx as onnx_lib
    mp = onnx_lib.load(str(tmp_path/'tiny.onnx'))
    desc = json.loads(next(p.value for p in mp.metadata_props if p.key == 'fastdet'))
    spec = desc.pop('input')
    desc.update(format='fastdet-onnx/1', size=spec['hw'][::-1], method=spec['method'], pad_mode=spec['pad_mode'], normalize=dict(mean=spec['mean'], std=spec['std']))
    onnx_lib.helper.set_model_props(mp, {p.key: p.value for p in mp.metadata_props} | dict(fastdet=json.dumps(desc)))
    onnx_lib.save(mp, str(tmp_path/'old.onnx'))
    old = load_onnx(tmp_path/'old.onnx')
    assert old.spec.hw == learn.input_spec.hw
    for (b1, n1, s1), (b2, n2, s2) in zip(onnx.predict_batch(files, bs=2, num_workers=0), old.predict_batch(files, bs=2, num_workers=0)):
        assert torch.equal(b1, b2) and n1 == n2 and torch.equal(s1, s2)

# what only the registry may know: the built-in families' tables, loss types and family classes
FAMILY_FACTS = {'ssd_configs', 'ssd_coco_archs', 'efficientdet_archs', 'efficientdet_config', 'MultiBoxLoss', 'EffDetLoss',
                'SSDFamily', 'EfficientDetFamily', 'create_ssd', 'create_efficientdet', 'ssd_split', 'efficientdet_split'}
REGISTRY = {'families', 'all', '_modidx'}  # `fastdet.all` re-exports everything
BELOW = ('models', 'losses', 'anchors')  # the families' own parts, which the registry assembles

def family_facts(source:str)->set:
    "The names of `FAMILY_FACTS` that `source` uses in code (not in comments or strings)."
    return {n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) else n.name
            for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.Name, ast.Attribute, ast.alias))} & FAMILY_FACTS

def test_no_family_dispatch_outside_the_registry():
    offenders = {}
    for p in PKG.rglob('*.py'):
        mod = '.'.join(p.relative_to(PKG).with_suffix('').parts)
        if mod in REGISTRY or mod.startswith(BELOW): continue
        if facts := family_facts(p.read_text()): offenders[mod] = sorted(facts)
    assert not offenders, f"modules that find a family by name or type instead of asking `family_of`: {offenders}"

def test_the_check_catches_dispatch():
    assert family_facts("if arch in efficientdet_archs(): pass\nx = isinstance(lf, MultiBoxLoss)") == {'efficientdet_archs', 'MultiBoxLoss'}
    assert family_facts("'a string naming ssd_configs'  # and a comment: MultiBoxLoss") == set()

def _as_format_1(fname, out):
    "The model file `fname` as fastdet wrote it before the family registry: format 1, `size` as (w, h) and the input's fields at the top, EfficientDet's options as `config`."
    obj = torch.load(fname, weights_only=True)
    d = obj['fastdet']
    spec = d.pop('input')
    d.update(format='fastdet-detector/1', size=spec['hw'][::-1], **{k: spec[k] for k in ('method', 'pad_mode', 'mean', 'std')})
    if d['recipe']['arch'].startswith('tf_efficientdet'): d['recipe'] = dict(arch=d['recipe']['arch'], config=d['recipe']['model_kwargs'], max_det=d['loss']['max_det'])
    torch.save(obj, out)
    return out

@pytest.mark.parametrize('arch', ['ssdlite_mobilenetv2', 'tf_efficientdet_d0'])
def test_model_files_of_the_previous_format_load(arch, tmp_path):
    from fastdet.learner import ssd_learner, efficientdet_learner
    dls = DetDataLoaders.from_shapes(n=16, size=(96, 128) if arch.startswith('ssd') else 128, render_size=128, bs=4, seed=1, num_workers=0)
    learn = (ssd_learner(dls, arch, weights=None) if arch.startswith('ssd') else
             efficientdet_learner(dls, arch, weights=None, config=dict(fpn_cell_repeats=2), max_det=50))
    save_detector(learn, tmp_path/'new.pth')
    old = load_detector(_as_format_1(tmp_path/'new.pth', tmp_path/'old.pth'))
    assert old.input_spec == learn.input_spec and old.recipe == learn.recipe and old.loss_func.max_det == learn.loss_func.max_det
    f = dls.valid.items[0].file
    with learn.no_bar(), old.no_bar(): (b1, n1, s1), (b2, n2, s2) = learn.predict(f), old.predict(f)
    assert torch.equal(b1, b2) and n1 == n2 and torch.equal(s1, s2)
