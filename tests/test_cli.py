"The `fastdet` command: train on the built-in dataset, then predict and eval with what it wrote."
import json, os, subprocess, sys
from pathlib import Path
import pytest

EXE = Path(sys.executable).parent/'fastdet'

def _run(*args, cwd):
    env = {**os.environ, 'PYTHONWARNINGS': 'ignore'}
    return subprocess.run([str(EXE), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=1500, env=env)

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp('cli')
    r = _run('train', '--n', 80, '--size', 128, '--epochs', 1, '--bs', 16, '--out', d/'out', cwd=d)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return d, r

def test_train_writes_model_png_stats(trained):
    d, r = trained
    for f in ('model.pkl', 'predictions.png', 'stats.json'): assert (d/'out'/f).stat().st_size > 0, f
    stats = json.loads((d/'out'/'stats.json').read_text())
    assert list(stats) == ['AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl']
    assert all(0 <= v <= 1 for v in stats.values())
    assert f"AP     Average Precision  0.50:0.95  all         100  {stats['AP']:.3f}" in r.stdout
    assert f"mAP@[.5:.95] = {stats['AP']:.3f}" in r.stdout

def test_predict_and_eval(trained):
    d, _ = trained
    from fastdet.data.shapes import make_shapes
    recs = make_shapes(n=80, size=256, seed=0)
    imgs = [recs[i].file for i in range(3)]
    (d/'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 not a jpeg')
    r = _run('predict', d/'out'/'model.pkl', *imgs, d/'broken.jpg', '--out', d/'pred', '--score-thresh', 0, cwd=d)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'broken.jpg' in r.stderr and 'skipped' in r.stderr
    dets = json.loads((d/'pred'/'detections.json').read_text())
    assert {x['file_name'] for x in dets} <= {str(f) for f in imgs} and dets
    for x in dets:
        assert x['category_name'] in ('circle', 'cross', 'square', 'triangle')
        x0, y0, w, h = x['bbox']; assert -1e-3 <= x0 and x0 + w <= 256 + 1e-3 and -1e-3 <= y0 and y0 + h <= 256 + 1e-3
    assert sorted(p.name for p in (d/'pred'/'images').iterdir()) == sorted(f'{f.stem}.png' for f in imgs)
    ann = recs[0].file.parent.parent/'annotations.json'
    r = _run('eval', d/'out'/'model.pkl', ann, '--voc', cwd=d)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'AR100' in r.stdout and 'VOC mAP@0.5' in r.stdout

@pytest.mark.parametrize('args, expect', [
    (('train', 'no/such/data.json'), 'no/such/data.json: no such file or folder'),
    (('eval', 'missing.pkl', 'x.json'), 'missing.pkl: no such model file'),
    (('predict', 'missing.pkl', 'a.jpg'), 'missing.pkl: no such model file'),
    (('train', 'notes.txt'), "can't tell the data format"),
    (('eval', 'notes.txt', 'x.json'), 'not a model file exported by fastdet'),
])
def test_errors_are_one_line(tmp_path, capsys, monkeypatch, args, expect):
    from fastdet.cli import main
    monkeypatch.chdir(tmp_path)
    (tmp_path/'notes.txt').write_text('hello')
    assert main(list(args)) == 1
    err = capsys.readouterr().err
    assert expect in err and 'Traceback' not in err and len(err.strip().splitlines()) == 1, err

def test_model_from_another_version(trained, tmp_path, capsys):
    import torch
    from fastai.learner import load_learner
    from fastdet.cli import main
    d, _ = trained
    learn = load_learner(d/'out'/'model.pkl')
    learn.fastdet_version = '0.0.0-other'
    learn.export(tmp_path/'old.pkl')
    assert main(['eval', str(tmp_path/'old.pkl'), 'x.json']) == 1
    err = capsys.readouterr().err
    assert 'exported by fastdet 0.0.0-other' in err and len(err.strip().splitlines()) == 1

def test_bad_path_in_a_real_process(tmp_path):
    r = _run('predict', 'missing.pkl', 'a.jpg', cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.strip() == 'fastdet predict: error: missing.pkl: no such model file', r.stderr
