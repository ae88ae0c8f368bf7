"`prior_fit`: the share of training boxes whose best default box reaches the matching IoU, against a direct `torchvision.ops.box_iou` over the default boxes as the model and loss make them, for both families."
import inspect
import pytest, torch
from torchvision.ops import box_iou
from torchvision.models.detection.ssd import SSD
from effdet import DetBenchTrain
from effdet.anchors import Anchors, AnchorLabeler
from fastdet.boxes import bbox_to_pixels, convert_boxes
from fastdet.data.records import DetRecord
from fastdet.data.readers import read_coco, read_yolo, read_voc
from fastdet.models.ssd import create_ssd
from fastdet.models.efficientdet import efficientdet_config, create_efficientdet
from fastdet.losses.ssd import MultiBoxLoss
from fastdet.families import family_of, SSD_FAMILY, EFFICIENTDET_FAMILY
from fastdet.priors import prior_fit, prior_fit_summary, prior_fit_warning, best_default_iou, input_boxes

def _ssd_anchors(arch, hw):
    "The default boxes an SSD's forward returns, in pixels."
    with torch.no_grad(): a = create_ssd(arch, 2).eval()(torch.zeros(1, 3, *hw))[2][0]
    return bbox_to_pixels(a, hw)

def _effdet_anchors(arch, hw):
    "effdet's own anchors of the config at `hw`, xyxy."
    return convert_boxes(Anchors.from_config(efficientdet_config(arch, image_size=hw)).boxes, 'yxyx', 'xyxy')

REFERENCE = {'ssdlite320_mobilenet_v3_large': _ssd_anchors, 'tf_efficientdet_d0': _effdet_anchors}

@pytest.fixture(scope='module')
def datasets(data_dir):
    return dict(coco128=read_coco(data_dir/'coco128'/'annotations'/'instances_train2017.json'),
                hit_uav=read_yolo(data_dir/'hit-uav'/'data.yaml', 'train'), raccoon=read_voc(data_dir/'raccoon'))

@pytest.mark.parametrize('arch', list(REFERENCE))
@pytest.mark.parametrize('name', ['coco128', 'hit_uav', 'raccoon'])
def test_shares_match_a_direct_box_iou(datasets, name, arch):
    recs, size = datasets[name], family_of(arch).default_size(arch)
    hw = (size, size)
    anchors = REFERENCE[arch](arch, hw)
    # the boxes squished into the input by hand, each one's best IoU from the full matrix, COCO's areas
    b = torch.cat([r.boxes * torch.tensor([hw[1] / r.hw[1], hw[0] / r.hw[0]] * 2) for r in recs])
    best = torch.cat([box_iou(c, anchors).amax(1) for c in b.split(256)])
    fit, area = best >= .5, (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    t = prior_fit(recs, arch)
    assert t.attrs['hw'] == hw and t.attrs['iou'] == .5
    assert t.share['all', 'all'] == pytest.approx(fit.double().mean().item(), abs=1e-9)
    for bucket, m in (('small', area < 32 ** 2), ('medium', (area >= 32 ** 2) & (area < 96 ** 2)), ('large', area >= 96 ** 2)):
        assert t.loc[('size', bucket), ['boxes', 'fit']].tolist() == [m.sum().item(), fit[m].sum().item()], bucket
    for c, row in t.loc['class'].iterrows():
        m = torch.tensor([l == c for r in recs for l in r.labels])
        assert [row.boxes, row.fit] == [m.sum().item(), fit[m].sum().item()], c
    assert torch.equal(best_default_iou(b, anchors), best)  # only the default boxes that can matter compared: the same maxima
    assert torch.allclose(input_boxes(recs, hw)[0], b, atol=1e-3)

def test_counts_add_up(datasets):
    t = prior_fit(datasets['coco128'], 'tf_efficientdet_d0', 640)
    total = t.loc[('all', 'all'), ['boxes', 'fit']].tolist()
    assert total[0] == sum(len(r.labels) for r in datasets['coco128']) and 0 < total[1] < total[0]
    for group in ('size', 'class'): assert t.loc[group, ['boxes', 'fit']].sum().tolist() == total, group
    assert (t.share == t.fit / t.boxes).all() and t.best_iou.between(0, 1).all()

@pytest.mark.parametrize('arch, hw', [('ssdlite_mobilenetv2', (256, 320)), ('ssd300_vgg16', (256, 320)), ('resnet18', (192, 256)),
                                      ('tf_efficientdet_d0', (384, 512))])
def test_default_boxes_are_the_models(arch, hw):
    "SSD's: what its forward returns (corners clipped, torchvision's steps, a timm backbone); effdet's: what its own training bench labels."
    if arch.startswith('tf_'):
        bench = DetBenchTrain(create_efficientdet(efficientdet_config(arch, num_classes=2, image_size=hw), pretrained=False))
        want = convert_boxes(bench.anchors.boxes, 'yxyx', 'xyxy')
        assert EFFICIENTDET_FAMILY.match_iou(arch) == bench.anchor_labeler.match_threshold  # (its unmatched threshold is the same)
    else: want = _ssd_anchors(arch, hw)
    assert torch.equal(family_of(arch).default_boxes(arch, hw), want)

def test_match_iou_is_the_losses():
    assert SSD_FAMILY.match_iou('ssdlite320_mobilenet_v3_large') == MultiBoxLoss().match_thresh == inspect.signature(SSD).parameters['iou_thresh'].default == .5
    assert SSD_FAMILY.match_iou('ssd300_vgg16', match_thresh=.6) == .6  # a loss setting changes it
    assert EFFICIENTDET_FAMILY.match_iou('tf_efficientdet_d0') == inspect.signature(AnchorLabeler).parameters['match_threshold'].default == .5

@pytest.mark.parametrize('arch, hw', [('ssdlite_mobilenetv2', (192, 256)), ('tf_efficientdet_d0', (256, 384))])
def test_known_answers(arch, hw):
    "Boxes that are default boxes fit; boxes of 2 px fit none, in the small bucket, with a warning."
    a = family_of(arch).default_boxes(arch, hw)
    a = a[(a >= 0).all(1) & (a[:, 2] <= hw[1]) & (a[:, 3] <= hw[0])][::3]  # inside the input: the resize leaves them whole
    t = prior_fit([DetRecord(f'{i}.jpg', a[i:i + 200], ['same'] * len(a[i:i + 200]), hw=hw) for i in range(0, len(a), 200)], arch, hw)
    assert t.loc[('all', 'all'), ['boxes', 'fit']].tolist() == [len(a), len(a)] and prior_fit_warning(t) is None
    xy = torch.cartesian_prod(torch.arange(0., hw[1] - 2, 5), torch.arange(0., hw[0] - 2, 5))
    t = prior_fit([DetRecord('dots.jpg', torch.cat([xy, xy + 2], 1), ['dot'] * len(xy), hw=hw)], arch, hw)
    assert t.loc[('all', 'all'), ['boxes', 'fit']].tolist() == [len(xy), 0] and t.boxes['size', 'small'] == len(xy)
    assert prior_fit_warning(t).startswith('warning: 0% of the small boxes (100% of all, median 2 px a side) have a default box at IoU >= 0.5')

def test_the_warning_names_each_familys_fix(datasets):
    "HIT-UAV's small boxes: SSD's default boxes grow with the input (a larger size does not help, SSD512's smaller ones do); effdet's anchors don't (it does)."
    hit = datasets['hit_uav']
    lite = {s: prior_fit(hit, 'ssdlite320_mobilenet_v3_large', s) for s in (320, 640)}
    d0 = {s: prior_fit(hit, 'tf_efficientdet_d0', s) for s in (512, 1024)}
    assert lite[320].share['all', 'all'] < .05 and abs(lite[640].share['all', 'all'] - lite[320].share['all', 'all']) < .01
    assert prior_fit(hit, 'ssd512_vgg16').share['all', 'all'] > .5
    assert d0[1024].share['all', 'all'] > d0[512].share['all', 'all'] + .3
    w = prior_fit_warning(lite[320])
    assert w.startswith('warning: 0% of the small boxes (91% of all, median 10 px a side)') and 'the smallest default boxes are 64 px' in w, w
    assert 'a larger --size does not help' in w and '--fit-boxes fits them to these boxes, or --arch ssd512_vgg16 (from 4% of the side)' in w, w
    assert 'a larger --size helps' in prior_fit_warning(d0[512])
    assert prior_fit_summary(d0[512]) == ('prior fit: the default boxes of tf_efficientdet_d0 at 512x512 fit 40% of the 2079 training boxes '
                                          '(IoU >= 0.5); small 21%, medium 99%, large 100%')
    for arch in REFERENCE: assert prior_fit_warning(prior_fit(datasets['raccoon'], arch)) is None  # large boxes: nothing to say

def test_ssd_boxes_not_smaller_than_its_default_boxes_fit_better_larger():
    "The built-in shapes at 64 px: the boxes are larger than SSD's smallest default boxes, but its grid is coarse; a larger size helps, and the warning says so."
    from fastdet.data.shapes import make_shapes
    recs = make_shapes(n=200, size=256, seed=0)
    t64, t128 = (prior_fit(recs, 'ssdlite_mobilenetv2', s) for s in (64, 128))
    assert t128.share['all', 'all'] > t64.share['all', 'all'] + .3
    assert prior_fit_summary(t64).endswith('fit 37% of the 433 training boxes (IoU >= 0.5); small 37%, medium 40%')
    assert prior_fit_warning(t64).endswith('a larger --size makes the grid finer (--fit-boxes fits their sizes and shapes); the images are shrunk 4.0x '
                                           'to the input, so --slice 64 trains on tiles at full resolution (predict with --slice too)'), prior_fit_warning(t64)


def test_fitted_boxes_are_the_models_and_its_files(tmp_path):
    """Issue 28.2, both families: `make_learner(..., fit_boxes=True)` puts the fitted options into the model (SSD's forward
    returns the fitted default boxes; effdet's loss labels with the fitted anchors), and the model file rebuilds them."""
    from fastdet.data.core import DetDataLoaders
    from fastdet.learner import ssd_learner, efficientdet_learner
    from fastdet.modelfile import save_detector, load_detector
    from fastdet.models.ssd import fm_sizes
    dls = DetDataLoaders.from_shapes(n=32, size=128, bs=8, num_workers=0)
    def anchors(learn):  # what the model (SSD) or its loss (EfficientDet) matches boxes to, pixels of the input
        if learn.family is SSD_FAMILY: return bbox_to_pixels(learn.model.default_boxes(fm_sizes(learn.model, 128), (128, 128)), (128, 128))
        return convert_boxes(learn.loss_func.anchors, 'yxyx', 'xyxy')
    for make, arch in ((ssd_learner, 'ssdlite_mobilenetv2'), (efficientdet_learner, 'tf_efficientdet_d0')):
        learn = make(dls, arch, weights=None, fit_boxes=True)
        opts = {k: v for k, v in learn.recipe['model_kwargs'].items()}
        family = family_of(arch)
        assert set(opts) == set(family.box_options(arch)) and opts != family.box_options(arch)
        assert torch.allclose(anchors(learn), family.default_boxes(arch, (128, 128), **opts))
        recs = list(dls.train.items)
        assert prior_fit(recs, arch, 128, **opts).share['all', 'all'] >= prior_fit(recs, arch, 128).share['all', 'all']
        save_detector(learn, tmp_path/f'{arch}.pth')
        again = load_detector(tmp_path/f'{arch}.pth')
        assert again.recipe['model_kwargs'] == opts and torch.equal(anchors(again), anchors(learn))
