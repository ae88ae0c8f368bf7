"The `fastdet` command: train on the built-in dataset, then predict and eval with what it wrote."
import json, os, struct, subprocess, sys, zlib
from pathlib import Path
import pytest

EXE = Path(sys.executable).parent/'fastdet'
SCRATCH = ('--weights', 'none', '--arch', 'ssdlite_mobilenetv2', '--aug', 'flip', '--ema', 'off')  # user data, trained as the built-in data (no download)

def _run(*args, cwd, **env):
    env = {**os.environ, 'PYTHONWARNINGS': 'ignore', **env}
    return subprocess.run([str(EXE), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=1500, env=env)

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp('cli')
    r = _run('train', '--n', 80, '--size', 128, '--epochs', 1, '--bs', 16, '--out', d/'out', '--pickle', cwd=d)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return d, r

def test_train_writes_model_png_stats(trained):
    d, r = trained
    for f in ('model.pth', 'model.pkl', 'predictions.png', 'stats.json', 'results.csv', 'per_class.csv', 'pr_curve.png', 'confusion_matrix.png',
              'losses.png', 'metrics.png', 'top_losses.png', 'errors.png'): assert (d/'out'/f).stat().st_size > 0, f
    import pandas as pd
    log = pd.read_csv(d/'out'/'results.csv')  # fastai's CSVLogger: one row per epoch
    assert list(log.columns) == ['epoch', 'train_loss', 'valid_loss', 'AP', 'AP_lo', 'AP_hi', 'AP50', 'time'] and len(log) == 1 and log.AP[0] == pytest.approx(json.loads((d/"out"/"stats.json").read_text())["AP"], abs=1e-6)
    assert log.AP_lo[0] <= log.AP[0] <= log.AP_hi[0]  # the 95% bootstrap interval of each epoch's AP
    assert set(pd.read_csv(d/'out'/'per_class.csv').name) == {'circle', 'cross', 'square', 'triangle'}
    stats = json.loads((d/'out'/'stats.json').read_text())
    names = ['AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl']
    assert list(stats) == [f'{k}{b}' for k in names for b in ('', '_lo', '_hi')]  # each statistic with its 95% interval
    assert all(0 <= v <= 1 or v == -1 for v in stats.values())  # -1: undefined, as pycocotools gives it
    assert all(stats[f'{k}_lo'] <= stats[k] <= stats[f'{k}_hi'] for k in names if stats[k] > -1)
    assert f"AP {stats['AP']:.3f} " not in r.stdout and f"[{stats['AP_lo']:.3f}, {stats['AP_hi']:.3f}]" in r.stdout  # printed next to the value
    assert f"AP     Average Precision  0.50:0.95  all         100  {stats['AP']:.3f}" in r.stdout
    for k, v in ((k, stats[k]) for k in names):  # undefined statistics print as '-', not as 0.000
        if v == -1: assert any(l.startswith(f"{k:<6}") and l.endswith('  -') for l in r.stdout.splitlines()), k
    assert f"mAP@[.5:.95] = {stats['AP']:.3f}" in r.stdout

def test_predict_and_eval(trained):
    d, _ = trained
    from fastdet.data.shapes import make_shapes
    recs = make_shapes(n=80, size=256, seed=0)
    imgs = [recs[i].file for i in range(3)]
    (d/'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 not a jpeg')
    r = _run('predict', d/'out'/'model.pth', *imgs, d/'broken.jpg', '--out', d/'pred', '--score-thresh', 0, '--save-images', cwd=d)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'broken.jpg' in r.stderr and 'skipped' in r.stderr
    dets = json.loads((d/'pred'/'detections.json').read_text())
    assert {x['file_name'] for x in dets} <= {str(f) for f in imgs} and dets
    for x in dets:
        assert x['category_name'] in ('circle', 'cross', 'square', 'triangle')
        x0, y0, w, h = x['bbox']; assert -1e-3 <= x0 and x0 + w <= 256 + 1e-3 and -1e-3 <= y0 and y0 + h <= 256 + 1e-3
    assert sorted(p.name for p in (d/'pred'/'images').iterdir()) == sorted(f'{f.name}.png' for f in imgs)
    ann = recs[0].file.parent.parent/'annotations.json'
    r = _run('eval', d/'out'/'model.pth', ann, '--voc', cwd=d)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'AR100' in r.stdout and 'VOC mAP@0.5' in r.stdout
    stats = json.loads((d/'runs'/'eval'/'stats.json').read_text())
    assert stats['AP_lo'] <= stats['AP'] <= stats['AP_hi'] and stats['VOC_mAP_lo'] <= stats['VOC_mAP'] <= stats['VOC_mAP_hi']
    assert f"[{stats['AP_lo']:.3f}, {stats['AP_hi']:.3f}]" in r.stdout and '95% interval' in r.stdout

@pytest.mark.parametrize('args, expect', [
    (('train', 'no/such/data.json'), 'no/such/data.json: no such file or folder'),
    (('eval', 'missing.pkl', 'x.json'), 'missing.pkl: no such model file'),
    (('predict', 'missing.pkl', 'a.jpg'), 'missing.pkl: no such model file'),
    (('train', 'notes.txt'), "can't tell the data format"),
    (('eval', 'notes.txt', 'x.json'), 'notes.txt: not a model file (neither a torch file nor a pickle)'),
    (('eval', 'notes.pkl', 'x.json'), 'notes.pkl: a pickled learner; loading it runs whatever code the file names'),
    (('eval', 'notes.pkl', 'x.json', '--unsafe-pickle'), 'not a model file exported by fastdet'),
    (('train', '--sampling', 'balanced'), '--sampling balanced: expected uniform, rfs or rfs:T'),
    (('train', '--sampling', 'rfs:2'), '--sampling rfs:T 2.0: expected a number above 0'),
])
def test_errors_are_one_line(tmp_path, capsys, monkeypatch, args, expect):
    from fastdet.cli import main
    monkeypatch.chdir(tmp_path)
    (tmp_path/'notes.txt').write_text('hello'); (tmp_path/'notes.pkl').write_text('hello')
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
    assert main(['eval', str(tmp_path/'old.pkl'), 'x.json', '--unsafe-pickle']) == 1
    err = capsys.readouterr().err
    assert 'exported by fastdet 0.0.0-other' in err and len(err.strip().splitlines()) == 1

def test_bad_path_in_a_real_process(tmp_path):
    r = _run('predict', 'missing.pkl', 'a.jpg', cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.strip() == 'fastdet predict: error: missing.pkl: no such model file', r.stderr

def test_pickle_path_still_loads_with_fastais_warning(trained, tmp_path):
    d, _ = trained
    env = {**os.environ}; env.pop('PYTHONWARNINGS', None)
    r = subprocess.run([str(EXE), 'eval', str(d/'out'/'model.pkl'), 'x.json', '--unsafe-pickle'], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert "insecure pickle" in r.stderr and 'x.json: no such file or folder' in r.stderr

def test_malicious_and_bare_files_are_refused(tmp_path):
    import pickle, torch
    class Evil:
        def __reduce__(self): return (os.system, (f'touch {tmp_path/"pwned"}',))
    (tmp_path/'evil.pth').write_bytes(pickle.dumps(Evil()))
    r = _run('predict', tmp_path/'evil.pth', tmp_path, cwd=tmp_path)
    assert r.returncode == 1 and 'evil.pth: not a fastdet model file that loads safely' in r.stderr and not (tmp_path/'pwned').exists()
    torch.save({'w': torch.zeros(2)}, tmp_path/'weights.pth')
    r = _run('eval', tmp_path/'weights.pth', 'x.json', cwd=tmp_path)
    assert r.returncode == 1 and 'a bare state dict' in r.stderr and '--weights' in r.stderr, r.stderr

def test_batch_larger_than_the_training_set_is_an_error(tmp_path):
    r = _run('train', '--n', 20, '--size', 64, '--epochs', 1, '--bs', 32, '--out', tmp_path/'o', cwd=tmp_path)
    assert r.returncode == 1 and 'training set (16 images) makes no batch of 32' in r.stderr and 'bs <= 16' in r.stderr, r.stderr
    assert not (tmp_path/'o').exists()  # said before a run folder is made

def test_predict_outputs_never_collide(trained, tmp_path):
    from PIL import Image
    d, _ = trained
    src = tmp_path/'photos'
    for f in ('a.jpg', 'a.png', 'sub/a.jpg'):
        (src/f).parent.mkdir(parents=True, exist_ok=True); Image.new('RGB', (64, 48), (90, 30, 200)).save(src/f)
    r = _run('predict', d/'out'/'model.pth', src, '--out', tmp_path/'pred', '--save-images', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(str(p.relative_to(tmp_path/'pred'/'images')) for p in (tmp_path/'pred'/'images').rglob('*.png')) == \
        ['a.jpg.png', 'a.png.png', 'sub/a.jpg.png']

def test_interrupt_saves_and_resume_finishes(tmp_path):
    "Ctrl-C (SIGINT) after an epoch: a one-line message, the weights so far, and --resume continues from the last epoch."
    import signal, time
    out = tmp_path/'run'
    env = {**os.environ, 'PYTHONWARNINGS': 'ignore'}
    # (fastdet train's `CtrlC` turns SIGINT into a flag read after each batch: a KeyboardInterrupt raised inside a finalizer
    # or an at-fork handler was swallowed and the run went on; no worker processes keeps this test quick)
    p = subprocess.Popen([str(EXE), 'train', '--n', '60', '--size', '64', '--epochs', '6', '--bs', '8', '--workers', '0', '--out', str(out)],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    t0 = time.time()
    while not (out/'progress.json').exists() and time.time() - t0 < 600 and p.poll() is None: time.sleep(.2)
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 130, err[-2000:]
    assert 'interrupted' in err and 'fastdet train --resume --out' in err and (out/'model.pth').is_file()
    before = json.loads((out/'progress.json').read_text())
    done = before['epoch']
    assert 1 <= done < 6 and len(before['rule']['history']) == done
    r = _run('train', '--resume', '--out', out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f'resuming after epoch {done}' in r.stdout and 'mAP@[.5:.95]' in r.stdout
    progress = json.loads((out/'progress.json').read_text())
    assert progress['epoch'] == 6
    # best.pth's rule went on from its state before the interruption: one judgement per epoch, those before it kept
    assert [h['epoch'] for h in progress['rule']['history']] == list(range(6)), progress['rule']['history']
    assert before['rule']['history'] == progress['rule']['history'][:done]

def test_a_finished_run_trains_longer(tmp_path):
    "`--resume --epochs N` beyond a finished run's epochs: N - E more (a new one-cycle at a tenth of the peak), appended to results.csv, best.pth judged against the run's best so far; N <= E refused."
    out = tmp_path/'o'
    r = _run('train', '--n', 60, '--size', 64, '--epochs', 2, '--bs', 8, '--workers', 0, '--out', out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = (out/'results.csv').read_text().splitlines()
    assert len(rows) == 1 + 2
    r = _run('train', '--resume', '--out', out, '--epochs', 2, cwd=tmp_path)
    assert r.returncode == 1 and 'this run finished all its epochs (2)' in r.stderr and '--epochs N, N > 2' in r.stderr, r.stderr
    r = _run('train', '--resume', '--out', out, '--epochs', 4, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "training the finished run longer: 2 more epochs (2 to 4), a new one-cycle peaking at a tenth of the run's learning rate (1.0e-03)" in r.stdout, r.stdout
    longer = (out/'results.csv').read_text().splitlines()
    assert longer[:3] == rows and len(longer) == 1 + 4, longer  # appended, the first rows kept
    progress = json.loads((out/'progress.json').read_text())
    assert progress['finished'] and progress['total'] == 4 and progress['phase'] == 'extend'
    assert [h['epoch'] for h in progress['rule']['history']] == [0, 1, 2, 3]  # best.pth: one rule over all four epochs
    assert json.loads((out/'args.json').read_text())['epochs'] == 4
    r = _run('train', '--resume', '--out', out, '--epochs', 4, cwd=tmp_path)
    assert r.returncode == 1 and 'this run finished all its epochs (4)' in r.stderr, r.stderr

def test_every_epoch_keeps_the_best_model(tmp_path):
    r = _run('train', '--n', 40, '--size', 64, '--epochs', 2, '--bs', 8, '--validate', 'every', '--out', tmp_path/'o', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    from fastdet.modelfile import load_detector
    assert (tmp_path/'o'/'best.pth').is_file() and (tmp_path/'o'/'models'/'last.pth').is_file()
    best, last = load_detector(tmp_path/'o'/'best.pth'), load_detector(tmp_path/'o'/'models'/'last.pth')
    assert best.dls.vocab[1:] == ['circle', 'cross', 'square', 'triangle']
    for m in (best, last):  # each with the threshold of its own epoch, where one was found
        assert m.score_thresh is None or ', epoch ' in m.score_thresh.source
    assert last.score_thresh is None or last.score_thresh.source.endswith('epoch 2')

def test_predict_skips_a_too_large_image_and_keeps_going(trained, tmp_path, monkeypatch, capsys):
    "13.9 through the command: an image over PIL's limit is named and skipped; the other images' detections are written."
    from PIL import Image
    from fastdet.cli import main
    d, _ = trained
    Image.new('RGB', (100, 100), (200, 40, 40)).save(tmp_path/'big.png'); Image.new('RGB', (40, 40), (40, 200, 40)).save(tmp_path/'ok.png')
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 4000)  # 10,000 px is over twice the limit: PIL refuses it
    assert main(['predict', str(d/'out'/'model.pth'), str(tmp_path/'big.png'), str(tmp_path/'ok.png'),
                 '--out', str(tmp_path/'pred'), '--score-thresh', '0']) == 0
    assert 'big.png: too large to open safely' in capsys.readouterr().err
    dets = json.loads((tmp_path/'pred'/'detections.json').read_text())
    assert dets and {x['file_name'] for x in dets} == {str(tmp_path/'ok.png')}

def test_help_lists_the_commands_without_importing_torch(tmp_path):
    "14.4: `fastdet`, `--help`, `COMMAND --help` and `--version` answer from the parser alone (torch is imported after parsing)."
    for args in ((), ('--help',)):
        r = _run(*args, cwd=tmp_path)
        assert r.returncode == 0 and [l.split()[0] for l in r.stdout.splitlines() if l.startswith('  ') and not l.strip().startswith('-')] == \
            ['train', 'predict', 'eval', 'compare', 'review', 'export'], r.stdout
    r = _run('train', '--help', cwd=tmp_path)
    assert r.returncode == 0 and 'Train a detector' in r.stdout and '--valid' in r.stdout and '--device' in r.stdout and '--workers' in r.stdout
    import fastdet
    assert _run('--version', cwd=tmp_path).stdout.strip() == f'fastdet {fastdet.__version__}'
    code = "import sys; from fastdet.cli import main, parser; parser('train').parse_args([]); print(sorted(m for m in ('torch', 'fastai', 'effdet') if m in sys.modules))"
    assert subprocess.run([sys.executable, '-c', code], capture_output=True, text=True).stdout.strip() == '[]'

def test_device_is_checked_before_any_work(tmp_path):
    import torch
    r = _run('train', '--device', 'gpu0', '--n', 40, cwd=tmp_path)
    assert r.returncode == 1 and 'not a device name' in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    if not torch.cuda.is_available():
        r = _run('eval', 'model.pth', 'x.json', '--device', 'cuda', cwd=tmp_path)
        assert r.returncode == 1 and 'no CUDA device here' in r.stderr, r.stderr
    assert not (tmp_path/'runs').exists()

def test_runs_are_numbered_and_named_last(trained, tmp_path):
    "14.5: without --out, each run gets the next folder of runs/; the last line names it."
    d, _ = trained
    from fastdet.data.shapes import make_shapes
    img = make_shapes(n=80, size=256, seed=0)[0].file
    for i, name in enumerate(('predict', 'predict2')):
        r = _run('predict', d/'out'/'model.pth', img, '--device', 'cpu', cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.strip().splitlines()[-1].startswith(f'results in {Path("runs")/name}') and (tmp_path/'runs'/name/'detections.json').is_file()
    ann = tmp_path/'elsewhere.json'  # a COCO json away from its images: --images finds them (14.2)
    ann.write_text((img.parent.parent/'annotations.json').read_text())
    r = _run('eval', d/'out'/'model.pth', ann, cwd=tmp_path)
    assert r.returncode == 1 and '--images DIR' in r.stderr, r.stderr
    r = _run('eval', d/'out'/'model.pth', ann, '--images', img.parent, '--workers', 0, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1].startswith(f'results in {Path("runs")/"eval"}: stats.json, per_class.csv'), r.stdout[-500:]
    assert (tmp_path/'runs'/'eval'/'confusion_matrix.png').stat().st_size > 0
    assert json.loads((tmp_path/'runs'/'eval'/'stats.json').read_text())['AP'] >= 0

def _table(stdout):
    "Rows of fastai's training table: the lines that start with an epoch number."
    import re
    return [l.split() for l in re.sub(r'\S*Epoch \d+/\d+ :[^\n]*?(?=\d+ {5,}|$)', '', stdout).splitlines() if re.match(r'^\d+ ', l)]

def test_valid_set_summary_and_aligned_columns(tmp_path):
    "14.1-14.3: --valid gives the validation set; the data check says what it repaired; skipped validations print '-'."
    from fastdet.data.shapes import make_shapes
    tr, va = make_shapes(n=48, size=96, seed=1, path=tmp_path/'tr'), make_shapes(n=17, size=96, seed=2, path=tmp_path/'va')
    r = _run('train', tmp_path/'tr'/'annotations.json', '--valid', tmp_path/'va'/'annotations.json', '--size', 64, '--bs', 8, '--epochs', 2,
             '--validate', 'last', '--workers', 0, '--out', tmp_path/'o', *SCRATCH, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"48 training / 17 validation images, validation: {tmp_path/'va'/'annotations.json'} (coco)" in r.stdout, r.stdout[:2000]
    assert 'data check: 65 images' in r.stdout and 'validation: after the last epoch' in r.stdout
    rows = _table(r.stdout)
    assert [len(x) for x in rows] == [8, 8] and rows[0][2:7] == ['-'] * 5 and rows[1][2] != '-', rows  # loss, AP with its interval, AP50
    import pandas as pd
    log = pd.read_csv(tmp_path/'o'/'results.csv')  # the skipped validation is NaN there
    assert len(log) == 2 and log.valid_loss.isna().tolist() == [True, False] and log.AP.isna().tolist() == [True, False]
    # a validation set with a class the training set lacks: one line naming it
    ann = json.loads((tmp_path/'va'/'annotations.json').read_text()); ann['categories'][0]['name'] = 'hexagon'
    (tmp_path/'va'/'odd.json').write_text(json.dumps(ann))
    r = _run('train', tmp_path/'tr'/'annotations.json', '--valid', tmp_path/'va'/'odd.json', '--images', tmp_path/'tr'/'images',
             '--valid-images', tmp_path/'va'/'images', cwd=tmp_path)
    assert r.returncode == 1 and "odd.json: classes ['hexagon'] are not among the training set's" in r.stderr, r.stderr

def test_the_data_check_is_summarised(tmp_path):
    "14.3 through the command: a PNG named .jpg, an xml of size 0 and a clipped box are each counted; --verbose names the files."
    from PIL import Image
    (tmp_path/'v').mkdir()
    for i in range(8):
        im = Image.new('RGB', (64, 48), (40 * i, 90, 200))
        im.save(tmp_path/'v'/f'{i}.jpg', format='PNG' if i == 0 else 'JPEG')
        w, h = (0, 0) if i == 1 else (64, 48)
        x2 = 70 if i == 2 else 40
        (tmp_path/'v'/f'{i}.xml').write_text(f"<annotation><filename>{i}.jpg</filename><size><width>{w}</width><height>{h}</height></size>"
                                            f"<object><name>dot</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>{x2}</xmax><ymax>30</ymax></bndbox></object></annotation>")
    r = _run('train', tmp_path/'v', '--size', 64, '--bs', 2, '--epochs', 1, '--workers', 0, '--verbose', '--out', tmp_path/'o', *SCRATCH, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"data: {tmp_path/'v'} (voc): 7 training / 1 validation images" in r.stdout, r.stdout[:1500]
    for line in ('data check: 8 images, 8 boxes', '1 images whose extension names another format: read by their content:',
                 '1 images without a size (or size 0) in their annotation: size read from the image:', '1 boxes clipped to their image (1 images):',
                 f"    {tmp_path/'v'/'0.jpg'}: PNG", f"    {tmp_path/'v'/'1.jpg'}", f"    {tmp_path/'v'/'2.jpg'}"):
        assert any(l.strip().startswith(line.strip()) for l in r.stdout.splitlines()), (line, r.stdout[:1500])

def test_repeat_factor_sampling_on_a_real_imbalanced_set(tmp_path):
    "--sampling rfs:T: the classes' factors as LVIS's rule gives them from the label files (HIT-UAV: OtherVehicle in 14 of 276 training images)."
    data = Path(os.environ['FASTDET_TEST_DATA'])/'hit-uav'
    names = ['Person', 'Car', 'Bicycle', 'OtherVehicle']
    files = sorted((data/'labels'/'train').glob('*.txt'))
    held = [{names[int(l.split()[0])] for l in f.read_text().splitlines() if l.strip()} for f in files]
    share = {c: sum(c in h for h in held) / len(held) for c in names}
    factor = {c: max(1, (.2 / f) ** .5) for c, f in share.items()}
    repeated = sum(max(factor[c] for c in h) > 1 for h in held if h)
    r = _run('train', data, '--sampling', 'rfs:0.2', '--size', 64, '--bs', 8, '--max-steps', 2, '--validate', 'last', '--workers', 0, '--out', tmp_path/'o', *SCRATCH, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(l for l in r.stdout.splitlines() if l.startswith('sampling:'))
    rare = sorted((f, c) for c, f in factor.items() if f > 1)[::-1]
    assert line == (f"sampling: repeat-factor (threshold 0.2): {', '.join(f'{c} x{f:.2f}' for f, c in rare)}; "
                    f"{repeated} of {len(files)} training images shown more often, each epoch still {len(files)} images"), line
    assert json.loads((tmp_path/'o'/'args.json').read_text())['sampling'] == 'rfs:0.2'  # --resume samples the same way

def _dots_and_blobs(folder, boxes=(('dot', 5, 8), ('dot', 30, 33), ('blob', 8, 56))):
    "8 VOC images of 64 x 64, each with the same `boxes` (name, lo, hi): by default two dots of 3 px and a blob of 48 px."
    from PIL import Image
    folder.mkdir()
    for i in range(8):
        Image.new('RGB', (64, 64), (40 * i, 90, 200)).save(folder/f'{i}.jpg')
        objs = ''.join(f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{a}</ymin><xmax>{b}</xmax><ymax>{b}</ymax></bndbox></object>" for n, a, b in boxes)
        (folder/f'{i}.xml').write_text(f"<annotation><filename>{i}.jpg</filename><size><width>64</width><height>64</height></size>{objs}</annotation>")
    return folder

def test_train_prints_the_prior_fit(tmp_path):
    "Issue 28.1: the data check says how many training boxes the default boxes fit, and names the fix when few do."
    _dots_and_blobs(tmp_path/'v')
    r = _run('train', tmp_path/'v', '--size', 64, '--bs', 2, '--epochs', 1, '--max-steps', 1, '--workers', 0, '--out', tmp_path/'o', *SCRATCH, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    i = lines.index('prior fit: the default boxes of ssdlite_mobilenetv2 at 64x64 fit 33% of the 21 training boxes (IoU >= 0.5); small 0%, medium 100%')
    assert lines[i - 1].startswith('data check: 8 images') and lines[i + 1].startswith(  # 7 training images, 3 boxes each
        'warning: 0% of the small boxes (67% of all, median 3 px a side) have a default box at IoU >= 0.5; the smallest default boxes are 13 px. '
        "SSD's default boxes grow with the input, so a larger --size does not help"), r.stdout[:2000]

def test_fit_boxes_fits_stores_and_fine_tunes_with_them(tmp_path):
    """Issue 28.2: `--fit-boxes` prints the fit before and after, the model file keeps the fitted default boxes (its
    predictions use them), and a run fine-tuned from that file (`--weights`) is built with them again."""
    import torch
    from fastdet.boxes import bbox_to_pixels
    from fastdet.models.ssd import fm_sizes
    from fastdet.modelfile import load_detector
    from fastdet.families import SSD_FAMILY
    _dots_and_blobs(tmp_path/'v', boxes=(('dot', 10, 22), ('dot', 36, 46), ('blob', 8, 56)))  # 12 and 10 px: the default boxes' smallest is 13
    args = ('--size', 64, '--bs', 2, '--epochs', 1, '--max-steps', 1, '--workers', 0, *SCRATCH)
    r = _run('train', tmp_path/'v', '--fit-boxes', '--out', tmp_path/'o', *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    i = next(k for k, l in enumerate(lines) if l.startswith('prior fit: the default boxes of'))
    before, after = lines[i], lines[i + 1]
    share = lambda l: int(l.split(' fit ')[1].split('%')[0])
    assert after.startswith('prior fit: the fitted default boxes of ssdlite_mobilenetv2 at 64x64 fit ') and '(scales [' in after, after
    assert share(after) > share(before), (before, after)
    assert '--fit-boxes' not in lines[i + 2], lines[i + 2]  # a warning after fitting names other fixes
    opts = load_detector(tmp_path/'o'/'model.pth').recipe['model_kwargs']
    assert set(opts) == {'scales', 'aspect_ratios'} and f"(scales {opts['scales']}; aspect_ratios {opts['aspect_ratios']})" in after
    learn = load_detector(tmp_path/'o'/'model.pth')
    assert torch.equal(bbox_to_pixels(learn.model.default_boxes(fm_sizes(learn.model, 64), (64, 64)), (64, 64)),
                       SSD_FAMILY.default_boxes('ssdlite_mobilenetv2', (64, 64), **opts))
    assert json.loads((tmp_path/'o'/'args.json').read_text())['fit_boxes'] is True  # --resume fits the same way (seeded)
    r = _run('train', tmp_path/'v', '--weights', tmp_path/'o'/'model.pth', '--out', tmp_path/'f', *args[:-len(SCRATCH)], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert load_detector(tmp_path/'f'/'model.pth').recipe['model_kwargs'] == opts

def test_eval_in_two_processes_prints_the_same_stats(trained, tmp_path):
    "17.3/17.4: `fastdet eval --procs 2` on 15 images (one padding sample) prints the one-process table exactly, VOC mAP included."
    d, _ = trained
    from fastdet.data.shapes import make_shapes
    make_shapes(n=15, size=256, seed=5, path=tmp_path/'odd')
    args = ('eval', d/'out'/'model.pth', tmp_path/'odd'/'annotations.json', '--voc', '--bs', 1, '--workers', 0)
    one = _run(*args, '--out', tmp_path/'e1', cwd=tmp_path, OMP_NUM_THREADS='1')  # one thread, as each of the two processes has
    two = _run(*args, '--procs', 2, '--out', tmp_path/'e2', cwd=tmp_path)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    table = lambda out: [l for l in out.splitlines() if l.split()[:1] and l.split()[0] in ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'AR1', 'AR10',
                                                                                           'AR100', 'ARs', 'ARm', 'ARl', 'VOC')]
    assert len(table(one.stdout)) == 13 and table(one.stdout) == table(two.stdout), (one.stdout, two.stdout)
    assert json.loads((tmp_path/'e1'/'stats.json').read_text()) == json.loads((tmp_path/'e2'/'stats.json').read_text())
    assert two.stdout.count('results in') == 1 and (tmp_path/'e2'/'pr_curve.png').is_file()

def test_train_in_two_processes(tmp_path):
    "17.3: `fastdet train --procs 2` trains under DDP (gloo on the CPU), prints once, states the batch size in all, writes once."
    r = _run('train', '--n', 40, '--size', 64, '--epochs', 1, '--bs', 8, '--workers', 0, '--procs', 2, '--out', tmp_path/'o', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'x 2 processes (batch size 8 per process, 16 in all; lr as given)' in r.stdout and r.stdout.count('results in') == 1, r.stdout[-3000:]
    from fastdet.modelfile import load_detector
    assert load_detector(tmp_path/'o'/'model.pth').dls.vocab[1:] == ['circle', 'cross', 'square', 'triangle']
    r = _run('train', '--procs', 2, '--device', 'cpu', cwd=tmp_path)
    assert r.returncode == 1 and 'leave --device out' in r.stderr

def test_export_int8_calibrates_on_the_runs_images_and_compares_with_float(trained, tmp_path):
    "26.3: `fastdet export --int8` writes convolutions as `QLinearConv` (int8 weights) with NMS still float, records how it was calibrated, and prints both files' COCO stats on the run's validation images (run by onnxruntime; the float file's AP that of the run)."
    import onnx
    d, _ = trained
    r = _run('export', d/'out'/'model.pth', '--int8', '--calib', 20, '--out', tmp_path/'m.int8.onnx', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    m = onnx.load(tmp_path/'m.int8.onnx')
    ops = [n.op_type for n in m.graph.node]
    assert ops.count('QLinearConv') >= 20 and 'NonMaxSuppression' in ops, sorted(set(ops))
    desc = json.loads({p.key: p.value for p in m.metadata_props}['fastdet'])
    assert desc['int8']['calibration_images'] == 20 and desc['vocab'] == ['#na#', 'circle', 'cross', 'square', 'triangle']
    out = r.stdout.splitlines()
    assert any(l.startswith('B = INT8 (m.int8.onnx) against A = float on 16 validation images') for l in out), r.stdout[-2000:]
    ap = next(l for l in out if l.startswith('AP ')).split()
    assert float(ap[1]) == pytest.approx(json.loads((d/'out'/'stats.json').read_text())['AP'], abs=.01)  # float ONNX = the run's model
    assert 'ms/image' in out[-1], out[-1]
    r = _run('export', d/'out'/'model.pth', '--data', 'x', cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.strip() == 'fastdet export: error: --data x: only used with --int8 (its calibration and validation images)', r.stderr
    r = _run('predict', tmp_path/'m.int8.onnx', tmp_path, '--runtime', 'openvino', cwd=tmp_path)  # OpenVINO reads no QLinearConv: said in one line
    assert r.returncode == 1 and "OpenVINO can't run this file" in r.stderr and r.stderr.strip().endswith('an INT8 file of fastdet export --int8 runs on onnxruntime'), r.stderr

def test_predict_sliced(trained, tmp_path):
    "28.3 through the command: `fastdet predict --slice` predicts each image on tiles merged by SAHI, boxes in the image's pixels; an unreadable file is skipped and said, as without slices; a bad --overlap is one line."
    d, _ = trained
    from fastdet.data.shapes import make_shapes
    imgs = [r.file for r in make_shapes(n=80, size=256, seed=0)[:2]]
    (tmp_path/'bad.jpg').write_text('not an image')
    r = _run('predict', d/'out'/'model.pth', *imgs, tmp_path/'bad.jpg', '--slice', 128, '--score-thresh', .05, '--workers', 0, '--out', tmp_path/'p', cwd=tmp_path)
    assert r.returncode == 0 and 'skipped 1 unreadable files' in r.stderr, r.stderr[-2000:]
    dets = json.loads((tmp_path/'p'/'detections.json').read_text())
    assert len(dets) > 0 and {x['file_name'] for x in dets} <= set(map(str, imgs)), r.stderr[-2000:]
    assert all(-.01 <= x['bbox'][0] and x['bbox'][0] + x['bbox'][2] <= 256.01 and x['score'] >= .05 for x in dets)  # merged into the 256 px image
    r = _run('predict', d/'out'/'model.pth', *imgs, '--slice', 128, '--overlap', 1, cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.strip() == 'fastdet predict: error: --overlap 1.0: expected a number from 0 to 0.95', r.stderr

def _small_objects(folder, n:int=8, side:int=256):
    "`n` VOC images `side` px square, each with 10 px squares at (20, 20), (130, 40) and (200, 210): small objects in large images."
    from PIL import Image, ImageDraw
    folder.mkdir()
    boxes = [(20, 20, 30, 30), (130, 40, 140, 50), (200, 210, 210, 220)]
    for i in range(n):
        im = Image.new('RGB', (side, side), (30, 30 + 10 * i, 60))
        for b in boxes: ImageDraw.Draw(im).rectangle(b, fill=(240, 240, 240))
        im.save(folder/f'{i}.jpg')
        objs = ''.join(f"<object><name>dot</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>" for a, b, c, d in boxes)
        (folder/f'{i}.xml').write_text(f"<annotation><filename>{i}.jpg</filename><size><width>{side}</width><height>{side}</height></size>{objs}</annotation>")
    return folder

def test_train_sliced(tmp_path):
    """28.4 through the command, as a user types it: `fastdet train DATA --slice 64` trains on the images' tiles (and the
    whole images), validates after each epoch on the validation images' tiles, and scores the whole validation images
    through sliced prediction at the end (the printed stats, stats.json, per_class.csv count the whole images' boxes);
    --resume keeps the slicing; bad values are one line each."""
    import pandas as pd
    _small_objects(tmp_path/'v')
    args = ('--size', 64, '--bs', 4, '--max-steps', 2, '--workers', 0, *SCRATCH)
    r = _run('train', tmp_path/'v', '--slice', 64, '--out', tmp_path/'o', *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    # 7 training images: each 256 px side cut at 0, 51, 102, 153 and 192 (64 px tiles, 12 px overlap): 25 tiles, 3 to 5 of them holding a dot
    assert 'data: ' in out and ': 7 training / 1 validation images' in out, out[:2000]
    line = next(l for l in out.splitlines() if l.startswith('slicing: '))
    assert line.startswith('slicing: tiles of 64 px, overlap 0.2: training on ') and 'validation on the 25 tiles of the validation images' in line, line
    assert 'COCO evaluation of the validation set (1 images, each predicted on tiles of 64 px merged with the whole image;' in out, out[-3000:]
    per = pd.read_csv(tmp_path/'o'/'per_class.csv')
    assert per.n_gt.tolist() == [3], per  # the whole validation image's 3 dots, not the tiles' copies of them
    stats = json.loads((tmp_path/'o'/'stats.json').read_text())
    assert f"mAP@[.5:.95] = {stats['AP']:.3f} [{stats['AP_lo']:.3f}, {stats['AP_hi']:.3f}]" in out
    assert {k: v for k, v in json.loads((tmp_path/'o'/'args.json').read_text()).items() if k in ('slice', 'overlap')} == {'slice': 64, 'overlap': .2}
    assert f"fastdet eval ... --slice 64" in out.splitlines()[-1], out[-500:]
    r = _run('eval', tmp_path/'o'/'model.pth', tmp_path/'v', '--slice', 64, '--workers', 0, '--out', tmp_path/'e', cwd=tmp_path)  # all 8 images, sliced
    assert r.returncode == 0 and 'COCO evaluation of ' in r.stdout and '(8 images, each predicted on tiles of 64 px merged with the whole image)' in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    assert pd.read_csv(tmp_path/'e'/'per_class.csv').n_gt.tolist() == [24]
    r = _run('train', tmp_path/'v', '--resume', '--epochs', 2, '--out', tmp_path/'o', cwd=tmp_path)  # one more epoch, sliced as before
    assert r.returncode == 0 and 'slicing: tiles of 64 px' in r.stdout and 'each predicted on tiles of 64 px' in r.stdout, r.stderr[-3000:]
    for bad, msg in ((('--slice', 8), '--slice 8: expected a whole number from 16 to 100000'), (('--slice', 64, '--overlap', 1), '--overlap 1.0: expected a number from 0 to 0.95')):
        r = _run('train', tmp_path/'v', *bad, *args, cwd=tmp_path)
        assert r.returncode == 1 and r.stderr.strip() == f'fastdet train: error: {msg}', r.stderr
    r = _run('train', '--slice', 64, cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.strip() == 'fastdet train: error: --slice needs DATA: the built-in shapes are small images, nothing to slice', r.stderr
    assert not (tmp_path/'runs').exists()  # errors said before a run folder is made

def test_review_ranks_the_images_labels(trained, tmp_path):
    "27.5 through the command: `fastdet review MODEL DATA` ranks every image by cleanlab's label quality (lowest first) into label_issues.csv, draws the top ones into label_issues.png, and prints them."
    import pandas as pd
    from fastdet.data.shapes import make_shapes
    d, _ = trained
    make_shapes(n=12, size=128, seed=5, path=tmp_path/'s')
    r = _run('review', d/'out'/'model.pth', tmp_path/'s'/'annotations.json', '--top', 2, '--workers', 0, '--out', tmp_path/'rv', cwd=tmp_path)
    assert r.returncode == 0 and 'warning' not in r.stderr, r.stderr[-2000:]
    df = pd.read_csv(tmp_path/'rv'/'label_issues.csv')
    assert len(df) == 12 and df.quality.is_monotonic_increasing and {'file', 'boxes', 'issue', 'overlooked', 'swap', 'badloc', 'likely'} <= set(df.columns)
    assert (tmp_path/'rv'/'label_issues.png').stat().st_size > 0 and r.stdout.strip().endswith('label_issues.csv, label_issues.png'), r.stdout
    assert Path(df.file[0]).name in r.stdout  # the most suspicious image, named

def test_export_onnx_and_predict_with_it(trained, tmp_path):
    "16.2 through the command: `fastdet export` writes an ONNX file; `fastdet predict` on it gives the PyTorch model's detections."
    d, _ = trained
    from fastdet.data.shapes import make_shapes
    imgs = [r.file for r in make_shapes(n=80, size=256, seed=0)[:6]]
    r = _run('export', d/'out'/'model.pth', '--out', tmp_path/'m.onnx', cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path/'m.onnx').stat().st_size > 100_000 and 'input images [B, 3, 128, 128]' in r.stdout, r.stderr[-2000:]
    runs = {}
    for m in ('model.pth', 'm.onnx'):
        r = _run('predict', d/'out'/'model.pth' if m == 'model.pth' else tmp_path/m, *imgs, '--bs', 4, '--score-thresh', .05, '--workers', 0,
                 '--device', 'cpu', '--out', tmp_path/f'pred_{m}', cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        runs[m] = sorted(json.loads((tmp_path/f'pred_{m}'/'detections.json').read_text()), key=lambda x: (x['file_name'], -x['score']))
    a, b = runs['model.pth'], runs['m.onnx']
    assert len(a) == len(b) > 0
    # The tiny model's detections come in near-ties (100 per image within 0.03 of each other; in some runs every score
    # is within 5e-4 of another), where float noise between the two runtimes may pick another of two tied boxes in NMS
    # or at the 100-detection cut. So: each image's scores agree one by one (written rounded to 1e-4); a detection whose
    # score no other detection of its image comes within 5e-4 of has the same class and box (written rounded to
    # 0.01 px) in both; and nearly all detections, tied or not, have their twin (600 of 600 in the runs looked at).
    def per_image(d): return {f: [x for x in d if x['file_name'] == f] for f in sorted({x['file_name'] for x in d})}
    pa, pb = per_image(a), per_image(b)
    assert pa.keys() == pb.keys()
    n_twins = 0
    for f in pa:
        xa, xb = pa[f], pb[f]
        assert len(xa) == len(xb) and all(abs(x['score'] - y['score']) <= 2e-4 for x, y in zip(xa, xb)), f
        for x in xa:
            twin = any(x['category_id'] == y['category_id'] and abs(x['score'] - y['score']) <= 2e-4
                       and max(abs(u - v) for u, v in zip(x['bbox'], y['bbox'])) <= 0.02 for y in xb)
            n_twins += twin
            if sum(abs(x['score'] - y['score']) < 5e-4 for y in xa) == 1: assert twin, (f, x)  # unambiguous: the same in both
    assert n_twins >= .9 * len(a), (n_twins, len(a))
    r = _run('eval', tmp_path/'m.onnx', 'x.json', cwd=tmp_path)
    assert r.returncode == 1 and 'not its ONNX export' in r.stderr


def test_compare_two_models_on_the_same_images(trained, tmp_path):
    "fastdet compare: B - A with its paired interval per statistic; a model against itself differs by exactly 0, and says so."
    d, _ = trained
    from fastdet.data.shapes import make_shapes
    ann = make_shapes(n=80, size=256, seed=0)[0].file.parent.parent/'annotations.json'  # the built-in shapes, as a COCO json
    m = d/'out'/'model.pth'
    r = _run('compare', m, m, ann, '--n-boot', 200, '--out', tmp_path/'cmp', cwd=d)
    assert r.returncode == 0, r.stderr[-3000:]
    import pandas as pd
    t = pd.read_csv(tmp_path/'cmp'/'compare.csv')
    assert list(t.stat) == ['AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl']
    ok = t.A > -1
    assert (t.delta[ok] == 0).all() and (t.lo[ok] == 0).all() and (t.hi[ok] == 0).all() and (t.A[ok] == t.B[ok]).all()
    assert 'AP: no difference the data can show' in r.stdout and (tmp_path/'cmp'/'compare_per_class.csv').is_file()

def _wandb_records(path):
    "The protobuf records of a W&B transaction log (`run-<id>.wandb`, what `wandb sync` uploads; wandb 0.31 has no Python reader): LevelDB's log format, a 7-byte header, then 32 KiB blocks of chunks (crc32 of type and data, length, type: 1 whole, 2 first, 3 middle, 4 last)."
    from wandb.proto.wandb_internal_pb2 import Record
    data, i, buf = Path(path).read_bytes(), 7, b''
    assert data[:4] == b':W&B', data[:7]
    while i + 7 <= len(data):
        if 32768 - i % 32768 < 7: i += 32768 - i % 32768; continue  # a block's zero trailer, too short for a chunk header
        crc, n, kind = struct.unpack('<IHB', data[i:i + 7])
        chunk, i = data[i + 7:i + 7 + n], i + 7 + n
        assert crc == zlib.crc32(chunk, zlib.crc32(bytes([kind]))), (i, kind)
        buf += chunk
        if kind in (1, 4): yield Record.FromString(buf); buf = b''

def _wandb_offline_run(folder):
    "The one offline W&B run under `folder`: its run record, config, history rows (`{'coco/AP': .., 'predictions/path': .., ...}`) and files folder."
    (log,) = Path(folder).glob('wandb/offline-run-*/run-*.wandb')
    recs = list(_wandb_records(log))
    (run,) = [r.run for r in recs if r.HasField('run')]
    config = {u.key: json.loads(u.value_json) for r in recs if r.HasField('run') or r.HasField('config') for u in (r.run.config if r.HasField('run') else r.config).update}
    rows = [{'/'.join(it.nested_key) or it.key: json.loads(it.value_json) for it in r.history.item} for r in recs if r.HasField('history')]
    return run, config, rows, log.parent/'files'

def test_log_to_tensorboard_mlflow_and_wandb(tmp_path, monkeypatch):
    "`--log tensorboard,mlflow,wandb` in one run: each epoch's COCO statistics with their bounds, the run's arguments and, at the end, the run folder's plots; read back from TensorBoard's event files, MLflow's file store and W&B's offline run in the run folder. Then the line that refuses an unknown tracker."
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    import mlflow
    env = {k: v for k, v in os.environ.items() if k != 'MLFLOW_TRACKING_URI' and not k.startswith('WANDB_')}
    monkeypatch.delenv('MLFLOW_TRACKING_URI', raising=False)
    out = tmp_path/'o'
    r = subprocess.run([str(EXE), 'train', '--n', '40', '--size', '64', '--epochs', '2', '--bs', '8', '--workers', '0', '--log', 'tensorboard,mlflow,wandb',
                        '--out', str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=1500, env={**env, 'PYTHONWARNINGS': 'ignore', 'WANDB_MODE': 'offline'})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1].endswith('; logged to tensorboard,mlflow,wandb'), r.stdout[-500:]
    stats = json.loads((out/'stats.json').read_text())
    ea = EventAccumulator(str(out/'tensorboard'), size_guidance={'images': 0, 'scalars': 0, 'tensors': 0}).Reload()
    assert [len(ea.Scalars(k)) for k in ('coco/AP', 'coco/AP_lo', 'coco/AP_hi', 'coco/AR100')] == [2] * 4
    assert abs(ea.Scalars('coco/AP')[-1].value - stats['AP']) < 1e-6
    assert {'predictions', 'labels.png', 'train_batch.png', 'predictions.png', 'pr_curve.png'} <= set(ea.Tags()['images']), ea.Tags()['images']
    monkeypatch.setenv('MLFLOW_ALLOW_FILE_STORE', 'true')
    client = mlflow.tracking.MlflowClient((out/'mlruns').resolve().as_uri())
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.run_name == 'o' and run.data.params['epochs'] == '2' and run.data.params['size'] == '64', run.data.params
    assert [m.step for m in client.get_metric_history(run.info.run_id, 'coco/AP')] == [0, 1]
    assert abs(run.data.metrics['coco/AP'] - stats['AP']) < 1e-9 and 'coco/AP_lo' in run.data.metrics
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {'labels.png', 'train_batch.png', 'predictions.png', 'stats.json', 'results.csv', 'predictions'} <= arts, arts
    assert not any(a.endswith('.pth') for a in arts)
    wb, config, rows, files = _wandb_offline_run(out)
    assert (wb.project, wb.display_name) == ('fastdet', 'o') and 'no API key' not in r.stderr  # WANDB_MODE=offline: no fallback needed, none said
    assert config['epochs'] == 2 and config['size'] == 64 and config['max_steps'] is None, config  # args.json's values, null as null
    epochs = [h for h in rows if 'coco/AP' in h]  # one history row per step (batch); the epochs' values in their last
    assert len(epochs) == 2 and all({'coco/AP_lo', 'coco/AP_hi', 'coco/AR100', 'valid_loss', 'train_loss'} <= set(h) for h in epochs), rows
    assert abs(epochs[-1]['coco/AP'] - stats['AP']) < 1e-6 and epochs[-1]['coco/AP_lo'] <= epochs[-1]['coco/AP'] <= epochs[-1]['coco/AP_hi'] and epochs[-1]['epoch'] == 2
    assert [h['predictions/_type'] for h in epochs] == ['image-file'] * 2  # the figure each epoch
    plots = {k.split('/')[1]: h[k] for h in rows for k in h if k.startswith('plots/') and k.endswith('/path')}
    assert set(plots) == {p.stem for p in out.glob('*.png')} and {'labels', 'train_batch', 'predictions', 'pr_curve'} <= set(plots), plots  # at the end
    assert all((files/p).is_file() for p in [*plots.values(), *(h['predictions/path'] for h in epochs)])
    r = _run('train', '--log', 'tensorboard,comet', cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.strip() == "fastdet train: error: --log tensorboard,comet: no tracker 'comet'; expected tensorboard, mlflow or wandb (several comma-separated)", r.stderr
    assert not (tmp_path/'runs').exists()  # refused before anything was read or made
