"""The paths users take, as they type them: `fastdet train DATA` with its defaults on each format, then `predict`, `eval`,
`export` and `predict` with the ONNX file, `--weights FILE`, `--resume`, and the README's notebook path. Only what makes a
run offline and short is added: `--size 128 --max-steps N` (both documented options), and a torch hub cache holding
torchvision's SSDLite320 COCO checkpoint, made here from torchvision's own model (the real download path, no network)."""
import json, os, re, signal, subprocess, sys, time
from pathlib import Path
import pytest
import torch
import torchvision

EXE = Path(sys.executable).parent/'fastdet'
QUICK = ('--size', 128, '--max-steps', 4)
OFFLINE = {'https_proxy': 'http://127.0.0.1:9', 'http_proxy': 'http://127.0.0.1:9', 'HF_HUB_OFFLINE': '1'}  # any download fails at once
RECIPE = re.compile(r"^recipe: (.+?) \(--weights (\S+)\), (\S+) epochs \(about (\d+) steps of (\d+) images\)", re.M)

@pytest.fixture(scope='module')
def hub(tmp_path_factory):
    "A TORCH_HOME whose hub cache holds torchvision's SSDLite320 COCO checkpoint file, and a copy of it as a plain checkpoint."
    d = tmp_path_factory.mktemp('torch_home')
    torch.manual_seed(0)
    m = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    w = torchvision.models.detection.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1
    f = d/'hub'/'checkpoints'/Path(w.url).name
    f.parent.mkdir(parents=True)
    torch.save(m.state_dict(), f)
    return d, f

def fastdet(*args, cwd, hub=None, **env):
    env = {**os.environ, 'PYTHONWARNINGS': 'ignore', **OFFLINE, **({'TORCH_HOME': str(hub[0])} if hub else {}), **env}
    return subprocess.run([str(EXE), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=1200, env=env)

def check_recipe(stdout:str, bounds:tuple):
    "The printed recipe: epochs a whole number within the recipe's bounds, steps and batch size sane."
    m = RECIPE.search(stdout)
    assert m, stdout[:2000]
    epochs = m.group(3)
    assert re.fullmatch(r'\d+', epochs) and bounds[0] <= int(epochs) <= bounds[1], m.group(0)
    assert int(m.group(4)) >= 1 and int(m.group(5)) == 16
    return int(epochs)

def check_model(fn, image):
    "The model file loads without unpickling and predicts on a real photo."
    from fastdet.modelfile import load_detector
    learn = load_detector(fn)
    boxes, labels, scores = learn.predict(image)
    assert boxes.shape[-1] == 4 and len(labels) == len(scores) == len(boxes)
    return learn

RUN_FILES = ('model.pth', 'args.json', 'progress.json', 'results.csv', 'stats.json', 'models/last.pth', 'per_class.csv', 'predictions.png',
             'labels.png', 'train_batch.png')

def train_journey(data, cwd, hub, bounds=(3, 30), extra=()):
    r = fastdet('train', data, *extra, *QUICK, cwd=cwd, hub=hub)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    epochs = check_recipe(r.stdout, bounds)
    last = r.stdout.strip().splitlines()[-1]
    out = cwd/last.split(':')[0].removeprefix('results in ')
    assert last.startswith('results in runs/train'), last
    for f in RUN_FILES: assert (out/f).stat().st_size > 0, f
    rows = [r.split(',') for r in (out/'results.csv').read_text().splitlines()]  # epochs cut by --max-steps keep their training loss
    assert rows[0][:3] == ['epoch', 'train_loss', 'valid_loss'] and all(len(r) == len(rows[0]) for r in rows), rows
    assert json.loads((out/'progress.json').read_text())['finished'] is True
    return r, out, epochs

@pytest.fixture(scope='module')
def voc_run(hub, data_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp('voc')
    r, out, _ = train_journey(data_dir/'raccoon', cwd, hub)
    return cwd, out, r

def test_train_voc_folder_with_the_defaults(voc_run, data_dir):
    cwd, out, r = voc_run
    assert 'fine-tuning from pretrained weights (--weights pretrained)' in r.stdout and 'augmentation ssd, EMA off' in r.stdout
    assert 'step cap (--max-steps 4): 1 epoch of 2 steps after the frozen epoch' in r.stdout, r.stdout[:2000]
    assert '160 training / 40 validation images' in r.stdout
    check_model(out/'model.pth', data_dir/'raccoon'/'images'/'raccoon-1.jpg')
    check_model(out/'models'/'last.pth', data_dir/'raccoon'/'images'/'raccoon-1.jpg')  # the per-epoch state is a model file too

@pytest.mark.parametrize('fmt', ['coco', 'yolo', 'csv'])
def test_train_each_format_with_the_defaults(fmt, hub, data_dir, tmp_path):
    data = {'coco': data_dir/'coco128'/'annotations'/'instances_train2017.json', 'yolo': data_dir/'coco128'/'data.yaml',
            'csv': data_dir/'raccoon'/'data'/'train_labels.csv'}[fmt]
    r, out, _ = train_journey(data, tmp_path, hub)
    assert f"({fmt})" in r.stdout.splitlines()[1]
    img = data_dir/'coco128'/'images'/'train2017'/'000000000009.jpg' if fmt != 'csv' else data_dir/'raccoon'/'images'/'raccoon-2.jpg'
    learn = check_model(out/'model.pth', img)
    assert len(learn.dls.vocab) - 1 == {'coco': 71, 'yolo': 71, 'csv': 1}[fmt]  # the classes that have boxes (71 of COCO's 80)

def test_predict_eval_export_onnx(voc_run, data_dir):
    cwd, out, _ = voc_run
    imgs = data_dir/'raccoon'/'images'
    r = fastdet('predict', out/'model.pth', imgs, cwd=cwd)
    assert r.returncode == 0 and r.stdout.strip().endswith('results in runs/predict: detections.json'), r.stderr[-2000:]
    dets = json.loads((cwd/'runs'/'predict'/'detections.json').read_text())
    assert {Path(d['file_name']).name for d in dets} <= {p.name for p in imgs.iterdir()}
    r = fastdet('eval', out/'model.pth', data_dir/'raccoon', cwd=cwd)
    assert r.returncode == 0, r.stderr[-2000:]
    stats = json.loads((cwd/'runs'/'eval'/'stats.json').read_text())
    assert 0 <= stats['AP'] <= 1 and 'data check: 200 images, 217 boxes' in r.stdout
    r = fastdet('export', out/'model.pth', cwd=cwd)
    assert r.returncode == 0 and (out/'model.onnx').stat().st_size > 100_000, r.stderr[-2000:]
    r = fastdet('predict', out/'model.onnx', imgs, cwd=cwd)
    assert r.returncode == 0 and r.stdout.strip().endswith('results in runs/predict2: detections.json'), r.stderr[-2000:]
    onnx = json.loads((cwd/'runs'/'predict2'/'detections.json').read_text())
    assert len(onnx) == len(dets)  # the same model: the same number of detections above the threshold

def test_fine_tune_from_a_torchvision_checkpoint(hub, data_dir, tmp_path):
    r, out, _ = train_journey(data_dir/'raccoon', tmp_path, None, extra=('--weights', hub[1]))
    assert f"fine-tuning from {hub[1]} (--weights {hub[1]})" in r.stdout
    check_model(out/'model.pth', data_dir/'raccoon'/'images'/'raccoon-3.jpg')
    # and on from fastdet's own model file: its architecture is taken from it
    r2, out2, _ = train_journey(data_dir/'raccoon', tmp_path, None, extra=('--weights', out/'model.pth'))
    assert 'ssdlite320_mobilenet_v3_large at size 128' in r2.stdout

def test_resume_an_interrupted_run(data_dir, tmp_path):
    "From scratch with the defaults, Ctrl-C after the first epoch; `fastdet train --resume` finishes it; a second --resume says it is finished."
    args = [str(EXE), 'train', str(data_dir/'raccoon'), '--weights', 'none', '--size', '128', '--max-steps', '30', '--workers', '0']
    p = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, 'PYTHONWARNINGS': 'ignore'})
    out, t0 = tmp_path/'runs'/'train', time.time()
    while not (out/'progress.json').exists() and time.time() - t0 < 600 and p.poll() is None: time.sleep(.2)
    p.send_signal(signal.SIGINT)
    stdout, err = p.communicate(timeout=300)
    assert p.returncode == 130, err[-2000:]
    check_recipe(stdout, (10, 300))
    done = json.loads((out/'progress.json').read_text())['epoch']
    assert 1 <= done < 3 and 'fastdet train --resume --out' in err
    check_model(out/'models'/'last.pth', data_dir/'raccoon'/'images'/'raccoon-4.jpg')
    r = fastdet('train', '--resume', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f'resuming after epoch {done}' in r.stdout and 'mAP@[.5:.95]' in r.stdout
    rows = (out/'results.csv').read_text().splitlines()
    assert len(rows) == 1 + 3 and all(len(x.split(',')) == 8 for x in rows), rows
    r = fastdet('train', '--resume', '--out', out, cwd=tmp_path)
    assert r.returncode == 1 and 'this run finished all its epochs' in r.stderr, r.stderr
    assert (out/'results.csv').read_text().splitlines() == rows  # nothing appended
    check_model(out/'model.pth', data_dir/'raccoon'/'images'/'raccoon-4.jpg')

def test_the_readme_notebook_path(hub, data_dir, tmp_path, monkeypatch):
    "README: `DetDataLoaders.from_voc`, `ssd_learner(..., weights='coco')`, `fine_tune`, `show_results`, `predict`, `save_detector` / `load_detector`."
    import matplotlib; matplotlib.use('Agg')
    from fastdet.all import DetDataLoaders, ssd_learner, ssd_aug_transforms, COCOMetric, save_detector, load_detector
    monkeypatch.setattr(torch.hub, '_hub_dir', str(hub[0]/'hub'))
    dls = DetDataLoaders.from_voc(data_dir/'raccoon', size=128, bs=16, batch_tfms=ssd_aug_transforms(), num_workers=0)
    learn = ssd_learner(dls, 'ssdlite320_mobilenet_v3_large', weights='coco', metrics=[COCOMetric('AP'), COCOMetric('AP50')], path=tmp_path)
    with learn.no_bar(): learn.fine_tune(1)
    assert len(learn.recorder.values) == 1 and 0 <= learn.recorder.values[-1][2] <= 1
    learn.show_results(max_n=2)
    img = data_dir/'raccoon'/'images'/'raccoon-5.jpg'
    boxes, labels, scores = learn.predict(img)
    save_detector(learn, tmp_path/'ssd.pth')
    again = load_detector(tmp_path/'ssd.pth')
    b2, l2, s2 = again.predict(img)
    assert torch.allclose(b2, boxes, atol=1e-3) and list(l2) == list(labels) and torch.allclose(s2, scores, atol=1e-4)
