"fastdet's torchvision layouts load torchvision's SSD checkpoints exactly: same outputs, default boxes and detections."
import copy, pickle, warnings
from pathlib import Path
import pytest
import torch
import torchvision
from torchvision.models.detection import ssd300_vgg16, ssdlite320_mobilenet_v3_large, SSD300_VGG16_Weights
from torchvision.models.detection.image_list import ImageList
from fastdet.boxes import bbox_to_pixels
import numpy as np
from fastdet.data.records import DetImage
from fastdet.data.core import DetDataLoaders, DetResize
from fastdet.models.ssd import create_ssd, load_ssd_weights, ssd_checkpoint
from fastdet.learner import ssd_learner

warnings.filterwarnings('ignore', category=FutureWarning)
BUILDERS = {'ssd300_vgg16': ssd300_vgg16, 'ssdlite320_mobilenet_v3_large': ssdlite320_mobilenet_v3_large}

@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    "torchvision's own COCO-layout models (untrained, no download), batch norm statistics made non-trivial, saved to files."
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp('checkpoints')  # pytest's: removed with its old runs, not left in /tmp (150 MB)
    out = {}
    for name, build in BUILDERS.items():
        tv = build(weights=None, weights_backbone=None, num_classes=91)
        with torch.no_grad():
            for m in tv.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.normal_(0, .2); m.running_var.uniform_(.5, 2.); m.weight.normal_(1, .2); m.bias.normal_(0, .2)
            for p in tv.head.parameters(): p.add_(torch.randn_like(p) * .02)  # spread the scores so that NMS and top-k matter
            if name == 'ssd300_vgg16':  # its 0-255 inputs saturate untrained class logits: scale them into a range without ties
                for p in tv.head.classification_head.parameters(): p.mul_(.01)
        torch.save(tv.state_dict(), d/f'{name}.pth')
        out[name] = (tv.eval(), d/f'{name}.pth')
    return out

@pytest.fixture
def coco_from_file(monkeypatch, checkpoints):
    "`weights='coco'` through torchvision's weights API, its download replaced by the test's checkpoint file."
    def fake_download(url, *args, **kwargs):
        name = next(n for n, w in (('ssd300_vgg16', 'ssd300_vgg16_coco'), ('ssdlite320_mobilenet_v3_large', 'ssdlite320_mobilenet_v3_large_coco')) if w in url)
        return torch.load(checkpoints[name][1], weights_only=True)
    monkeypatch.setattr(torchvision.models._api, 'load_state_dict_from_url', fake_download)

@pytest.mark.parametrize('name', list(BUILDERS))
def test_outputs_and_default_boxes_equal_torchvision(name, checkpoints, coco_from_file):
    tv, _ = checkpoints[name]
    m = create_ssd(name, num_classes=90, weights='coco').eval()
    size = m.config['size']
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        cls, reg, anc = m(x)
        feats = list(tv.backbone(x).values())
        ref = tv.head(feats)
        tv_anc = tv.anchor_generator(ImageList(x, [(size, size)] * 2), feats)[0]
    d_cls, d_reg = (cls - ref['cls_logits']).abs().max(), (reg - ref['bbox_regression']).abs().max()
    d_anc = (bbox_to_pixels(anc[0], (size, size)) - tv_anc).abs().max()
    print(f"\n{name}: max |logits diff| {d_cls:.2e}, |regression diff| {d_reg:.2e}, |default box diff| {d_anc:.2e} px")
    assert d_cls <= 1e-4 and d_reg <= 1e-4 and d_anc <= 1e-3

@pytest.mark.parametrize('name', list(BUILDERS))
def test_predict_equals_torchvision_on_real_images(name, checkpoints, coco_from_file, data_dir):
    "`learn.predict` on COCO128 photos: torchvision's detections on the same resized tensor, mapped to the photo's pixels."
    tv, _ = checkpoints[name]
    size = create_ssd(name, 1).config['size']
    cats = SSD300_VGG16_Weights.COCO_V1.meta['categories']
    vocab = [c if c != 'N/A' else f'N/A {i}' for i, c in enumerate(cats)][1:]  # vocab index = torchvision's label
    dls = DetDataLoaders.from_coco(data_dir/'coco128/annotations/instances_train2017.json', vocab=vocab, size=size, bs=4,
                                   num_workers=0, check_images=False)
    learn = ssd_learner(dls, name, weights='coco')
    worst = dict(box=0., score=0.)
    tv = copy.deepcopy(tv).to(memory_format=torch.channels_last)  # predict's memory format on the CPU: the same kernels, bit for bit
    for rec in list(dls.valid.items)[:4]:
        boxes, labels, scores = learn.predict(rec.file)
        x = torch.from_numpy(np.asarray(DetResize(size)(DetImage.create(rec.file)))).permute(2, 0, 1).float() / 255
        with torch.no_grad(): ref = tv([x])[0]
        H, W = rec.hw
        ref_boxes = ref['boxes'] * torch.tensor([W / size, H / size] * 2)
        assert len(scores) == len(ref['scores']) > 0
        assert labels == [vocab[int(i) - 1] for i in ref['labels']], 'same labels in the same order (by score)'
        worst['box'] = max(worst['box'], float((boxes - ref_boxes).abs().max()))
        worst['score'] = max(worst['score'], float((scores - ref['scores']).abs().max()))
        worst['n'] = worst.get('n', 0) + len(scores)
    print(f"\n{name}: predict vs torchvision, {worst['n']} detections on 4 COCO128 photos: max box diff {worst['box']:.2e} px, "
          f"score diff {worst['score']:.2e}")
    assert worst['box'] <= 1e-2 and worst['score'] <= 1e-4

def test_another_class_count_reinitialises_exactly_the_class_heads(checkpoints):
    tv, ckpt = checkpoints['ssdlite320_mobilenet_v3_large']
    torch.manual_seed(0)
    m = create_ssd('ssdlite320_mobilenet_v3_large', num_classes=3, weights=ckpt)
    torch.manual_seed(0)
    fresh = create_ssd('ssdlite320_mobilenet_v3_large', num_classes=3)
    state, sd = torch.load(ckpt, weights_only=True), m.state_dict()
    tv_keys = [k for k in state if not k.startswith('head.classification_head.')]
    ours = [k for k in sd if not k.startswith('cls_heads.')]
    assert len(tv_keys) == len(ours) and all(torch.equal(sd[a], state[b]) for a, b in zip(ours, tv_keys))
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in sd.items() if k.startswith('cls_heads.'))
    # the same class count: every tensor from the file
    m90 = create_ssd('ssdlite320_mobilenet_v3_large', num_classes=90, weights=ckpt)
    assert torch.equal(m90.cls_heads[5][1].weight, tv.head.classification_head.module_list[5][1].weight)

def test_wrong_checkpoint_is_a_named_error(checkpoints, tmp_path):
    _, ckpt = checkpoints['ssdlite320_mobilenet_v3_large']
    with pytest.raises(ValueError, match=r'ssdlite320_mobilenet_v3_large\.pth does not fit ssd300_vgg16'):
        create_ssd('ssd300_vgg16', num_classes=90, weights=ckpt)
    state = torch.load(ckpt, weights_only=True)
    state['backbone.extra.1.0.0.weight'] = state['backbone.extra.1.0.0.weight'][:, :-1]
    torch.save(state, tmp_path/'cut.pth')
    with pytest.raises(ValueError, match=r"cut\.pth does not fit ssdlite320_mobilenet_v3_large: its backbone\.extra\.1\.0\.0\.weight"):
        create_ssd('ssdlite320_mobilenet_v3_large', num_classes=90, weights=tmp_path/'cut.pth')
    with pytest.raises(ValueError, match='no COCO weights for'):
        create_ssd('ssdlite_mobilenetv2', num_classes=3, weights='coco')
    with pytest.raises(FileNotFoundError, match='nope.pth: no such checkpoint file'):
        create_ssd('ssd300_vgg16', num_classes=3, weights=tmp_path/'nope.pth')
    class Evil:
        def __reduce__(self): return (print, ('ran code',))
    torch.save({'x': Evil()}, tmp_path/'evil.pth')
    with pytest.raises(ValueError, match='not a checkpoint torch can load as plain tensors'):
        create_ssd('ssd300_vgg16', num_classes=3, weights=tmp_path/'evil.pth')

def test_fastdets_own_checkpoint_and_old_exports_load(tmp_path):
    m = create_ssd('ssdlite_mobilenetv2', num_classes=3)
    torch.save(m.state_dict(), tmp_path/'own.pth')
    m2 = create_ssd('ssdlite_mobilenetv2', num_classes=3, weights=tmp_path/'own.pth')
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
    # a model pickled by fastdet 0.0.1 (`n_classes`, no `steps`): it loads and keeps its cell-centred default boxes
    old = create_ssd('ssd300_vgg16_cells', num_classes=3)
    d = old.__dict__; d['n_classes'] = d.pop('num_classes'); del d['steps']
    back = pickle.loads(pickle.dumps(old))
    assert back.num_classes == 3 and back.steps is None
    cls, reg, anc = back.eval()(torch.randn(1, 3, 300, 300))
    assert cls.shape == (1, 8732, 4)
