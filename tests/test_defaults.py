"""Bad input and faults a new user meets, each on real files: run folders claimed atomically and never overwritten,
model files written whole, model files read as data and checked, numeric options range-checked, and data that is
silently wrong (tiny sets, duplicates, wrong units, overlapping splits, no boxes, unreadable images, classes named NA)."""
import json, os, pickle, subprocess, sys, threading
from pathlib import Path
import pandas as pd
import pytest
import torch
from PIL import Image
from fastdet.cli import main

EXE = Path(sys.executable).parent/'fastdet'

def _run(*args, cwd):
    return subprocess.run([str(EXE), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, 'PYTHONWARNINGS': 'ignore'})

def _err(capsys)->str:
    err = capsys.readouterr().err
    assert 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    return err

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "A finished run of `fastdet train` on the built-in data (1 epoch, size 64)."
    d = tmp_path_factory.mktemp('run')
    r = _run('train', '--n', 40, '--size', 64, '--epochs', 1, '--bs', 8, '--workers', 0, '--out', d/'out', cwd=d)
    assert r.returncode == 0, r.stderr[-3000:]
    return d/'out'

@pytest.fixture
def raccoons(data_dir):
    return data_dir/'raccoon'

def _voc(folder:Path, raccoons:Path, names:list, boxes=None):
    "A VOC folder of real raccoon photos with their own boxes (or `boxes`)."
    import shutil
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copy(raccoons/'images'/f'{n}.jpg', folder/f'{n}.jpg')
        xml = (raccoons/'annotations'/f'{n}.xml').read_text()
        (folder/f'{n}.xml').write_text(xml)
    return folder

# --- 2. run folders and files ---

def test_run_folders_are_claimed_atomically(tmp_path):
    from fastdet.commands import run_dir
    got, barrier = [], threading.Barrier(8)
    def claim():
        barrier.wait(); got.append(run_dir('train', root=tmp_path/'runs'))
    ts = [threading.Thread(target=claim) for _ in range(8)]
    for t in ts: t.start()
    for t in ts: t.join()
    assert len(set(got)) == 8 and all(p.is_dir() for p in got)

def test_out_holding_a_run_is_refused(run, tmp_path, capsys):
    img = tmp_path/'a.png'; Image.new('RGB', (64, 64), (200, 30, 30)).save(img)
    before = (run/'model.pth').read_bytes()
    assert main(['train', '--n', '40', '--size', '64', '--epochs', '1', '--out', str(run)]) == 1
    assert f"--out {run}: already holds" in _err(capsys) and (run/'model.pth').read_bytes() == before
    assert main(['predict', str(run/'model.pth'), str(img), '--out', str(run)]) == 1
    assert '--exist-ok' in _err(capsys)
    assert main(['predict', str(run/'model.pth'), str(img), '--out', str(run), '--exist-ok']) == 0
    assert (run/'detections.json').is_file() and (run/'model.pth').read_bytes() == before

def test_a_failed_write_leaves_the_previous_file(run, tmp_path, monkeypatch):
    "A full disk in the middle of `torch.save` (simulated where torch writes): the old model file stays, no half file, the path is named."
    from fastdet.modelfile import load_detector, save_detector
    from fastdet.files import WriteError
    import shutil
    shutil.copy(run/'model.pth', tmp_path/'model.pth')
    learn, before = load_detector(tmp_path/'model.pth'), (tmp_path/'model.pth').read_bytes()
    real = torch.save
    def full_disk(obj, f, *a, **k):
        real(obj, f, *a, **k); Path(f).write_bytes(Path(f).read_bytes()[:364_000])
        raise RuntimeError('[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/12: file write failed')
    monkeypatch.setattr(torch, 'save', full_disk)
    with pytest.raises(WriteError, match=f"{tmp_path/'model.pth'}: can't write .*disk full"): save_detector(learn, tmp_path/'model.pth')
    assert (tmp_path/'model.pth').read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ['model.pth']

def test_export_never_overwrites_its_input(run, capsys):
    before = (run/'model.pth').read_bytes()
    assert main(['export', str(run/'model.pth'), '--out', str(run/'model.pth')]) == 1
    assert 'that is the model itself' in _err(capsys) and (run/'model.pth').read_bytes() == before

def test_a_crash_after_training_leaves_a_loadable_model(tmp_path, monkeypatch):
    import fastdet.commands as C
    from fastdet.modelfile import load_detector
    def boom(*a, **k): raise RuntimeError('plotting failed')
    monkeypatch.setattr(C, 'save_results', boom)
    with pytest.raises(RuntimeError, match='plotting failed'):
        C.train(n=40, size=64, epochs=1, bs=8, workers=0, out=tmp_path/'o')
    assert load_detector(tmp_path/'o'/'model.pth').dls.vocab[1:] == ['circle', 'cross', 'square', 'triangle']
    assert load_detector(tmp_path/'o'/'models'/'last.pth') is not None  # the per-epoch state is a model file

def test_last_pth_is_a_model_predict_loads(run, tmp_path):
    img = tmp_path/'a.png'; Image.new('RGB', (64, 64), (30, 30, 200)).save(img)
    r = _run('predict', run/'models'/'last.pth', img, '--out', tmp_path/'p', cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path/'p'/'detections.json').is_file(), r.stderr[-2000:]

def test_resume_of_a_finished_run_says_so(run, capsys):
    rows = (run/'results.csv').read_text()
    assert main(['train', '--resume', '--out', str(run)]) == 1
    err = _err(capsys)
    assert 'this run finished all its epochs (1); nothing to resume' in err and '--epochs N, N > 1' in err and (run/'results.csv').read_text() == rows

# --- 3. model files are data ---

def test_a_pickle_is_refused_without_the_flag(tmp_path, capsys):
    class Evil:
        def __reduce__(self): return (os.system, (f'touch {tmp_path/"pwned"}',))
    (tmp_path/'evil.pkl').write_bytes(pickle.dumps(Evil()))
    for cmd in (['predict', str(tmp_path/'evil.pkl'), str(tmp_path)], ['eval', str(tmp_path/'evil.pkl'), 'x.json'], ['export', str(tmp_path/'evil.pkl')]):
        assert main(cmd) == 1
        err = _err(capsys)
        assert 'a pickled learner' in err and '--unsafe-pickle' in err and not (tmp_path/'pwned').exists()

def test_the_files_of_a_run_are_as_readable_as_any_the_user_writes(run):
    umask = os.umask(0); os.umask(umask)
    for f in ('model.pth', 'models/last.pth', 'args.json', 'stats.json', 'progress.json', 'predictions.png'):
        assert (run/f).stat().st_mode & 0o777 == 0o666 & ~umask, f"{f}: {oct((run/f).stat().st_mode & 0o777)}"  # not mkstemp's private 0600

def _forged(run, tmp_path, change)->Path:
    obj = torch.load(run/'model.pth', weights_only=True)
    change(obj)
    torch.save(obj, tmp_path/'forged.pth')
    return tmp_path/'forged.pth'

def test_the_stored_description_is_checked(run, tmp_path, capsys):
    def huge(o): o['fastdet']['input']['hw'] = [100000, 100000]
    assert main(['predict', str(_forged(run, tmp_path, huge)), str(tmp_path)]) == 1
    assert "forged.pth: its description's input size [100000, 100000] is not two whole numbers of pixels from 1 to 4096" in _err(capsys)
    def nan_std(o): o['fastdet']['input']['std'] = [float('nan')] * 3
    assert main(['predict', str(_forged(run, tmp_path, nan_std)), str(tmp_path)]) == 1
    assert 'forged.pth: its description holds description.input.std[0] = nan' in _err(capsys)
    def maps(o): o['fastdet']['recipe']['model_kwargs'] = dict(n_maps=10**6)
    assert main(['predict', str(_forged(run, tmp_path, maps)), str(tmp_path)]) == 1
    assert 'recipe.model_kwargs.n_maps = 1000000' in _err(capsys)

def test_a_state_dict_that_does_not_fit_names_the_tensor(run, tmp_path, capsys):
    def shrink(o):
        k = next(k for k, v in o['state_dict'].items() if v.ndim == 4)
        o['state_dict'][k] = o['state_dict'][k][:1]; o['k'] = k
    f = _forged(run, tmp_path, shrink)
    k = torch.load(f, weights_only=True)['k']
    assert main(['predict', str(f), str(tmp_path)]) == 1
    err = _err(capsys)
    assert f"forged.pth does not fit this SSD: its {k} is (1," in err and "the model's is (" in err

def test_a_folder_or_a_text_file_as_the_model(run, tmp_path, capsys):
    assert main(['predict', str(run), str(tmp_path)]) == 1
    assert f"{run}: a folder, not a model file; the run's model is {run/'model.pth'}" in _err(capsys)
    (tmp_path/'notes.pth').write_text('hello')
    assert main(['eval', str(tmp_path/'notes.pth'), 'x.json']) == 1
    err = _err(capsys)
    assert 'notes.pth: not a model file (neither a torch file nor a pickle)' in err and 'load_learner' not in err

def test_weights_from_fastdets_own_model_file(run, tmp_path):
    from fastdet.commands import train
    learn, stats = train(n=40, size=64, epochs=1, bs=8, workers=0, weights=str(run/'model.pth'), out=tmp_path/'o', show=False)
    assert learn.recipe['arch'] == 'ssdlite_mobilenetv2' and 0 <= stats['AP'] <= 1  # the file's architecture, fine-tuned

# --- 4. arguments and data ---

@pytest.mark.parametrize('args, expect', [
    (['train', '--epochs', '0'], '--epochs 0: expected a whole number from 1 to 100000'),
    (['train', '--bs', '0'], '--bs 0: expected a whole number from 1 to 4096'),
    (['train', '--lr', '-1'], '--lr -1.0: expected a number above 0 up to 10'),
    (['train', '--max-steps', '0'], '--max-steps 0: expected a whole number from 1'),
    (['train', '--size', '100000'], '--size 100000: expected a whole number from 32 to 4096'),
    (['predict', 'm.pth', 'a.jpg', '--score-thresh', '5'], '--score-thresh 5.0: expected a number from 0 to 1'),
    (['eval', 'm.pth', 'x.json', '--bs', '0'], '--bs 0: expected a whole number from 1 to 4096'),
    (['export', 'm.pth', '--opset', '7'], '--opset 7: expected a whole number from 11 to 21'),
])
def test_numeric_options_are_range_checked_first(args, expect, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 1
    assert expect in _err(capsys) and not (tmp_path/'runs').exists()

def test_a_dataset_of_three_images_trains_without_validation(raccoons, tmp_path):
    v = _voc(tmp_path/'three', raccoons, ['raccoon-1', 'raccoon-2', 'raccoon-3'])
    r = _run('train', v, '--weights', 'none', '--size', 64, '--max-steps', 2, '--workers', 0, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert '3 training / 0 validation images, validation: none: 3 images are too few to hold any back' in r.stdout
    assert 'each epoch shows them 6 times' in r.stdout and 'no metric' in r.stdout
    from fastdet.modelfile import load_detector
    assert load_detector(tmp_path/'runs'/'train'/'model.pth').dls.vocab[1:] == ['raccoon']

def test_one_image_under_two_spellings_is_one_image(raccoons, tmp_path):
    from fastdet.data.readers import read_csv, read_coco
    from fastdet.data.records import check_records
    df = pd.read_csv(raccoons/'data'/'train_labels.csv')
    two = df[df.filename == 'raccoon-12.jpg']  # two raccoons in one photo
    assert len(two) == 2
    rows = two.copy(); rows.loc[rows.index[1], 'filename'] = './raccoon-12.jpg'
    rows.to_csv(tmp_path/'t.csv', index=False)
    recs, report = check_records(read_csv(tmp_path/'t.csv', raccoons/'images'), verbose=False)
    assert len(recs) == 1 and len(recs[0].boxes) == 2 and len(report.merged) == 1
    # one file under two COCO ids, each with one of the boxes
    ann = dict(images=[dict(id=1, file_name='raccoon-12.jpg'), dict(id=2, file_name='raccoon-12.jpg')], categories=[dict(id=1, name='raccoon')],
               annotations=[dict(id=i, image_id=i, category_id=1, bbox=[float(r.xmin), float(r.ymin), float(r.xmax - r.xmin), float(r.ymax - r.ymin)])
                            for i, r in zip((1, 2), two.itertuples())])
    (tmp_path/'c.json').write_text(json.dumps(ann))
    recs, _ = check_records(read_coco(tmp_path/'c.json', raccoons/'images'), verbose=False)
    assert len(recs) == 1 and len(recs[0].boxes) == 2

def test_normalised_boxes_given_as_pixels(raccoons, tmp_path, capsys):
    df = pd.read_csv(raccoons/'data'/'train_labels.csv').head(12)
    for c, s in (('xmin', 'width'), ('xmax', 'width'), ('ymin', 'height'), ('ymax', 'height')): df[c] = df[c] / df[s]
    df.to_csv(tmp_path/'norm.csv', index=False)
    assert main(['train', str(tmp_path/'norm.csv'), '--images', str(raccoons/'images'), '--weights', 'none']) == 1
    err = _err(capsys)
    assert 'norm.csv: all 12 boxes lie within [0, 1]' in err and 'multiply x by the image width' in err

def test_yolo_labels_in_pixels(raccoons, tmp_path):
    import shutil
    from fastdet.data.readers import read_yolo
    (tmp_path/'images').mkdir(); (tmp_path/'labels').mkdir()
    shutil.copy(raccoons/'images'/'raccoon-1.jpg', tmp_path/'images'/'a.jpg')
    (tmp_path/'labels'/'a.txt').write_text('0 330.5 250.0 461.0 337.0\n')  # pixels, not fractions
    (tmp_path/'data.yaml').write_text('path: .\ntrain: images\nnames: [raccoon]\n')
    with pytest.raises(ValueError, match=r"a.txt:1: coordinates \[330.5, 250.0, 461.0, 337.0\] are not normalised"): read_yolo(tmp_path/'data.yaml')

def test_valid_set_overlapping_the_training_set_is_reported(raccoons):
    from fastdet.commands import train_dls, data_summary
    csv = raccoons/'data'/'train_labels.csv'
    dls, info = train_dls(csv, size=64, bs=16, valid=raccoons/'data'/'test_labels.csv', workers=0)
    assert info['overlap'] == 0 and 'warning' not in data_summary(dls, info)
    dls, info = train_dls(csv, size=64, bs=16, valid=csv, workers=0)
    assert f"warning: 160 of the 160 validation images are also training images" in data_summary(dls, info)

def test_a_training_set_without_boxes_is_an_error(raccoons, tmp_path, capsys):
    v = _voc(tmp_path/'v', raccoons, [f'raccoon-{i}' for i in range(1, 9)])
    for x in v.glob('*.xml'):
        xml = x.read_text(); x.write_text(xml[:xml.index('<object>')] + '</annotation>\n')
    assert main(['train', str(v), '--weights', 'none', '--size', '64']) == 1
    assert 'not one box in the 7 training images: nothing to learn' in _err(capsys)

def test_predict_with_no_readable_image_fails(run, tmp_path, capsys):
    (tmp_path/'a.jpg').write_bytes(b'\xff\xd8\xff\xe0 not a jpeg'); (tmp_path/'b.png').write_bytes(b'nope')
    assert main(['predict', str(run/'model.pth'), str(tmp_path/'a.jpg'), str(tmp_path/'b.png'), '--out', str(tmp_path/'p')]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert 'none of the 2 images could be read' in err and 'a.jpg' in err and 'b.png' in err

def test_a_class_named_na_stays_a_class(raccoons, tmp_path):
    from fastdet.data.readers import read_csv
    df = pd.read_csv(raccoons/'data'/'train_labels.csv').head(6)
    df['class'] = ['NA', 'None', 'null', 'NA', 'raccoon', 'NA']
    df.to_csv(tmp_path/'na.csv', index=False)
    recs = read_csv(tmp_path/'na.csv', raccoons/'images')
    assert sorted({l for r in recs for l in r.labels}) == ['NA', 'None', 'null', 'raccoon']

def test_a_data_error_keeps_the_file_name_on_its_line(raccoons, tmp_path, capsys):
    v = _voc(tmp_path/'v', raccoons, [f'raccoon-{i}' for i in range(1, 8)])
    (v/'raccoon-3.jpg').write_bytes((v/'raccoon-3.jpg').read_bytes()[:2000])  # truncated
    assert main(['train', str(v), '--weights', 'none', '--size', '64']) == 1
    err = _err(capsys)
    assert "1 of 7 images can't be used:" in err and 'raccoon-3.jpg' in err
