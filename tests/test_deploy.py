"Batched prediction, predict_files and ONNX export on real COCO128 images: equal to the learner's own detections."
import json, sys
import numpy as np
import pytest
import torch
from fastai.data.transforms import Normalize
from fastai.vision.core import TensorImage, image2tensor
from fastdet.boxes import bbox_to_pixels, unpad, convert_boxes
from fastdet.data.records import open_image, image_hw
from fastdet.data.core import DetDataLoaders
from fastdet.learner import ssd_learner, efficientdet_learner
from fastdet.deploy import predict_files, load_onnx, image_files

@pytest.fixture(scope='module', autouse=True)
def one_thread():
    "One torch thread: a CPU convolution's last bits depend on how its threads split the batch, so with two threads a batch\
    of 2 and a batch of 1 give boxes up to 1.2e-3 px apart on 640 px images (float32 noise); with one they are bit-identical."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def covered(d1, d2, px=1e-3, score=1e-4)->bool:
    "Whether each detection of `(boxes, scores, labels)` `d1` is one of `d2` (an untrained model ties scores: their order may differ)."
    (b1, s1, l1), (b2, s2, l2) = d1, d2
    free = list(range(len(b2)))
    for b, s, l in zip(b1, s1, l1):
        j = next((j for j in free if l2[j] == l and abs(float(s2[j]) - float(s)) <= score and (b2[j] - b).abs().max() <= px), None)
        if j is None: return False
        free.remove(j)
    return True

def _above(d, c):
    keep = [i for i, s in enumerate(d[1]) if float(s) > c]
    return d[0][keep] if keep else d[0][:0], [d[1][i] for i in keep], [d[2][i] for i in keep]

def same_dets(d1, d2, px=1e-3, score=1e-4)->bool:
    "Whether `d1` and `d2` hold the same detections, in any order; near the lowest score kept, which of two detections a hair apart in score made the cut (top-k, max_det) is float noise: each side's detections clearly above it must be among the other's."
    assert len(d1[0]) == len(d2[0]), f"{len(d1[0])} vs {len(d2[0])} detections"
    scores = [float(s) for s in list(d1[1]) + list(d2[1])]
    cut = min(scores) if scores else -1.
    a1, a2 = _above(d1, cut + 2 * score), _above(d2, cut + 2 * score)
    assert len(a1[1]) >= len(d1[1]) // 2, f"only {len(a1[1])} of {len(d1[1])} detections clearly above the cut"
    return covered(a1, _above(d2, cut), px, score) and covered(a2, _above(d1, cut), px, score)

def coco_dls(data_dir, size, bs=4):
    c = data_dir/'coco128'
    return DetDataLoaders.from_coco(c/'annotations'/'instances_train2017.json', c/'images'/'train2017', size=size, bs=bs,
                                    num_workers=0, check_images=False)

def some_images(data_dir, n):
    "`n` COCO128 images of different sizes (and the grayscale one)."
    files = sorted((data_dir/'coco128'/'images'/'train2017').glob('*.jpg'))
    out, sizes = [], set()
    for f in files:
        hw = image_hw(f)
        if hw not in sizes or open_image(f).getbands() != ('R', 'G', 'B'): out.append(f); sizes.add(hw)
        if len(out) == n: break
    return out

def calibrated(learn, data_dir, part=''):
    "`learn` with the BatchNorm statistics of real images in its modules named `part`*: an untrained network then gives spread-out scores (else all tied)."
    for n, m in learn.model.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and n.startswith(part): m.reset_running_stats(); m.momentum = None
    nrm = [t for t in learn.dls.after_batch.fs if isinstance(t, Normalize)][0]
    learn.model.train()
    with torch.no_grad(): learn.model(nrm(TensorImage(_batch(some_images(data_dir, 40)[-6:], learn))))
    learn.model.eval()
    return learn

@pytest.fixture(scope='module')
def ssdlite(data_dir):
    return calibrated(ssd_learner(coco_dls(data_dir, 320), 'ssdlite320_mobilenet_v3_large', weights=None), data_dir)

def test_predict_batch_equals_predict(ssdlite, data_dir):
    files = some_images(data_dir, 5)
    assert len({image_hw(f) for f in files}) == 5
    with ssdlite.no_bar():
        batched = ssdlite.predict_batch(files + [open_image(files[0])], bs=2, num_workers=2)
        for f, (b, n, s) in zip(files + [files[0]], batched):
            b1, n1, s1 = ssdlite.predict(f)
            assert len(b1) > 50 and b1[:, 2].max() > 320  # many detections, in the image's own pixels
            assert same_dets((b, s, n), (b1, s1, n1))

def test_predict_files_skips_and_lists_unreadable(ssdlite, data_dir, tmp_path, capsys):
    files = some_images(data_dir, 3)
    d = tmp_path/'photos'; (d/'sub').mkdir(parents=True)
    for f in files[:2]: (d/f.name).write_bytes(f.read_bytes())
    (d/'sub'/files[0].name).write_bytes(files[0].read_bytes())  # same name below: its own output name
    (d/'broken.jpg').write_bytes(files[2].read_bytes()[:2000])  # truncated JPEG
    (d/'notes.png').write_text('not an image')
    with ssdlite.no_bar(): results, skipped = predict_files(ssdlite, [d], tmp_path/'out', bs=2, num_workers=2, score_thresh=.0125,
                                                            save_images=True)
    err = capsys.readouterr().err
    assert sorted(p.name for p in skipped) == ['broken.jpg', 'notes.png']
    assert 'warning: skipped' in err and 'broken.jpg' in err and 'notes.png' in err
    assert json.loads((tmp_path/'out'/'detections.json').read_text()) == results
    assert sorted(str(p.relative_to(tmp_path/'out'/'images')) for p in (tmp_path/'out'/'images').rglob('*.png')) == \
        sorted([f.name + '.png' for f in files[:2]] + ['sub/' + files[0].name + '.png'])
    cats = {v: k for k, v in ssdlite.dls.categories.items()}
    assert all(r['category_id'] == cats[r['category_name']] for r in results) and cats['person'] == 1
    readable = [f for f, _ in image_files([d]) if f not in skipped]
    assert {r['image_id'] for r in results} <= {i for i, (f, _) in enumerate(image_files([d])) if f not in skipped}
    for f in readable:
        with ssdlite.no_bar(): b, n, s = ssdlite.predict(f)
        k = s >= .0125
        mine = [r for r in results if r['file_name'] == str(f)]
        assert len(mine) == int(k.sum()) > 0
        assert same_dets((torch.tensor([r['bbox'] for r in mine]), [r['score'] for r in mine], [r['category_name'] for r in mine]),
                         (convert_boxes(b[k], 'xyxy', 'xywh'), s[k], [x for x, kk in zip(n, k) if kk]), px=.011)
    # the output folder inside the photos' folder, run twice: its own drawings are never taken for photos
    for _ in range(2):
        with ssdlite.no_bar(): again, _ = predict_files(ssdlite, [d], d/'out', bs=2, num_workers=0, score_thresh=.0125, save_images=True)
        assert len(list((d/'out'/'images').rglob('*.png'))) == 3 and {r['file_name'] for r in again} == {r['file_name'] for r in results}

def _batch(files, learn):
    "Real images at the learner's size, RGB in [0, 1]."
    h, w = learn.input_spec.hw
    return torch.stack([image2tensor(open_image(f).resize((w, h))) for f in files]).float() / 255

def learner_dets(learn, x):
    "The learner's own detections (model, `loss_func.activation`) on `x` in [0, 1]: per image `(boxes px of x, scores, labels)`."
    nrm = [t for t in learn.dls.after_batch.fs if isinstance(t, Normalize)][0]
    with torch.no_grad(): dec = learn.loss_func.activation(learn.model.eval()(nrm(TensorImage(x))))
    return [(bbox_to_pixels(b, x.shape[-2:]), s, l) for b, l, s in unpad(*dec)]

# float32 noise: PyTorch's own float32 boxes of a (BatchNorm-calibrated) random SSDLite are up to 1.3e-3 px from its
# float64 ones on these images; onnxruntime's (other kernels, Conv+BatchNorm folded by the exporter) up to 2.2e-3 px from
# PyTorch's float32 ones, whatever its graph optimisation level. 1e-3 px is below that floor.
PX = 3e-3
# A random EfficientDet (only its backbone calibrated) regresses boxes far outside the image (-700 .. 700 px at 256):
# exp() of large offsets amplifies float32 noise, up to 0.13 px and scores 1.5e-4 apart (same detections, same order)
EFFDET_PX, EFFDET_SCORE = .25, 3e-4

def onnx_dets(out):
    return [(torch.as_tensor(b)[l > 0], torch.as_tensor(s)[l > 0], torch.as_tensor(l)[l > 0]) for b, s, l in zip(*out)]

def check_onnx(learn, data_dir, tmp_path, min_dets=20, px=PX, score=1e-4):
    fn = learn.export_onnx(tmp_path/'model.onnx')
    det = load_onnx(fn)
    meta = det.session.get_modelmeta().custom_metadata_map
    assert json.loads(meta['vocab']) == list(learn.dls.vocab) and 'person' in json.loads(meta['vocab'])
    assert json.loads(meta['input_hw']) == list(learn.input_spec.hw)
    x = _batch(some_images(data_dir, 3), learn)
    for xb in (x[:1], x):  # a dynamic batch axis
        out = det(xb.numpy())
        assert out[0].shape == (len(xb), learn.loss_func.max_det, 4)
        compared = 0
        for d1, d2 in zip(learner_dets(learn, xb), onnx_dets(out)):
            # which of two detections a hair apart in score is the K-th (or above a tie) is float noise: compare each
            # side's detections clearly above the K-th score with the other side's above it
            cut = d1[1].min() if len(d1[0]) == learn.loss_func.max_det else -1.
            above = lambda d, c: [t[d[1] > c] for t in d]
            a1, a2 = above(d1, cut + 2 * score), above(d2, cut + 2 * score)
            if len(a1[0]) < min_dets: continue  # scores of a random model tie on some images
            assert covered(a1, above(d2, cut), px, score) and covered(a2, above(d1, cut), px, score)
            compared += 1
        assert compared >= (len(xb) + 1) // 2
    return det

def test_onnx_ssdlite_and_predict_files(ssdlite, data_dir, tmp_path):
    det = check_onnx(ssdlite, data_dir, tmp_path)
    files = some_images(data_dir, 4)
    with ssdlite.no_bar(): ref = ssdlite.predict_batch(files, bs=3, num_workers=0)
    for (b1, n1, s1), (b2, n2, s2) in zip(ref, det.predict_batch(files, bs=3, num_workers=0)):
        assert same_dets((b1, s1, n1), (b2, s2, n2), px=PX * 640 / 320)  # pixels of images up to 640 px: noise x 2
    with ssdlite.no_bar(): r1, _ = predict_files(ssdlite, files, tmp_path/'a', bs=4, num_workers=0, score_thresh=.0125)
    r2, _ = predict_files(det, files, tmp_path/'b', bs=4, num_workers=0, score_thresh=.0125)
    key = lambda res: (torch.tensor([r['bbox'] for r in res]), [r['score'] for r in res], [(r['file_name'], r['category_id']) for r in res])
    assert len(r1) > 100 and same_dets(key(r1), key(r2), px=.011, score=2e-4)

def test_onnx_efficientdet(data_dir, tmp_path):
    # the backbone only: calibrated BiFPN and heads make effdet's unbounded box regression overflow
    learn = calibrated(efficientdet_learner(coco_dls(data_dir, 256), 'tf_efficientdet_d0', weights=None), data_dir, 'backbone')
    check_onnx(learn, data_dir, tmp_path, px=EFFDET_PX, score=EFFDET_SCORE)

@pytest.mark.slow
def test_onnx_ssd300_vgg16(data_dir, tmp_path):
    learn = calibrated(ssd_learner(coco_dls(data_dir, 300), 'ssd300_vgg16', weights=None), data_dir)
    check_onnx(learn, data_dir, tmp_path)

def test_missing_onnxruntime_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    with pytest.raises(ImportError, match=r'pip install "fastdet\[onnx\]"'): load_onnx(tmp_path/'x.onnx')

def test_openvino_runs_the_exported_file_as_onnxruntime_does(ssdlite, data_dir, tmp_path):
    "26.3: the same `.onnx` file run by OpenVINO in float32 gives onnxruntime's detections (float noise apart), through `predict_batch` as any detector; a runtime fastdet doesn't know is refused by name."
    fn = ssdlite.export_onnx(tmp_path/'m.onnx')
    files = some_images(data_dir, 4)
    ref = load_onnx(fn).predict_batch(files, bs=2, num_workers=0)
    ov = load_onnx(fn, runtime='openvino', precision='f32')
    assert ov.vocab == list(ssdlite.dls.vocab) and ov.spec == ssdlite.input_spec
    for (b1, n1, s1), (b2, n2, s2) in zip(ref, ov.predict_batch(files, bs=2, num_workers=0)):
        assert len(s1) > 50 and same_dets((b1, s1, n1), (b2, s2, n2), px=PX * 640 / 320)
    with pytest.raises(ValueError, match=r"runtime 'tensorrt': expected onnxruntime or openvino"): load_onnx(fn, runtime='tensorrt')
