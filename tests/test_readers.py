"The readers on the shared real datasets: the acceptance counts of issue 2, format agreement, DataLoaders from each format."
import pandas as pd
import pytest
import torch
from fastai.vision.core import TensorBBox
from fastdet.boxes import unpad, convert_boxes
from fastdet.data.records import check_records
from fastdet.data.core import DetDataLoaders, det_pad
from fastdet.data.readers import read_coco, read_voc, read_yolo, read_csv, read_df

SMALL = dict(size=64, bs=4, num_workers=0)

@pytest.fixture(scope='module')
def coco(data_dir): return read_coco(data_dir/'coco128/annotations/instances_train2017.json')

@pytest.fixture(scope='module')
def voc(data_dir): return read_voc(data_dir/'raccoon')

def test_coco_counts(coco):
    assert len(coco) == 128
    assert sum(len(r.labels) for r in coco) == 929
    assert sum(len(r.crowd) for r in coco) == 10
    assert sum(r.is_negative for r in coco) == 2
    assert sorted(r.file.name for r in coco if r.is_negative) == ['000000000250.jpg', '000000000508.jpg']
    assert all(r.file.exists() for r in coco)
    assert all(r.image_id == int(r.file.stem) for r in coco)
    assert coco.categories[1] == 'person' and coco.categories[90] == 'toothbrush' and len(coco.categories) == 80

def test_coco_check_pass_keeps_everything(coco):
    recs, rep = check_records([r for r in read_coco(coco.source)], verbose=False)
    assert (rep.images, rep.boxes, rep.negatives, sum(rep.dropped.values())) == (128, 929, 2, 0)
    assert sum(len(r.crowd) for r in recs) == 10
    # the json's sizes agree with the images' (which the check pass trusts)
    assert [r.hw for r in recs] == [r.hw for r in coco]

def _match(a_boxes, a_labels, b_boxes, b_labels, hw):
    "Greedy one-to-one match of same-class boxes; largest coordinate difference as a fraction of the image size."
    h, w = hw
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    used, worst = set(), 0.
    for box, lab in zip(a_boxes, a_labels):
        cands = [(float(((box - b) / scale).abs().max()), j) for j, (b, l) in enumerate(zip(b_boxes, b_labels)) if l == lab and j not in used]
        assert cands, f"no {lab} box left to match"
        d, j = min(cands)
        used.add(j); worst = max(worst, d)
    return worst

def test_yolo_same_boxes_as_coco(coco, data_dir):
    yolo = read_yolo(data_dir/'coco128/data.yaml')
    assert len(yolo) == 128 and sum(len(r.labels) for r in yolo) == 929 and sum(r.is_negative for r in yolo) == 2
    by_file = {r.file.name: r for r in yolo}
    assert set(by_file) == {r.file.name for r in coco}
    worst = 0.
    for c in coco:
        y = by_file[c.file.name]
        assert len(y.labels) == len(c.labels), c.file
        assert y.hw == c.hw  # the reader read the size from the image header
        worst = max(worst, _match(c.boxes, c.labels, y.boxes, y.labels, c.hw))
    assert worst < 1e-3
    assert yolo.categories[0] == 'person' and len(yolo.categories) == 80

def test_voc_counts(voc):
    assert len(voc) == 200 and sum(len(r.labels) for r in voc) == 217
    assert {l for r in voc for l in r.labels} == {'raccoon'}
    assert all(r.file.exists() for r in voc)
    assert sum(int(r.difficult.sum()) for r in voc) == 0 and all(len(r.difficult) == len(r.labels) for r in voc)

def _by_file(recs): return {r.file.name: sorted(map(tuple, r.boxes.tolist())) for r in recs}

def test_csv_same_boxes_as_voc(voc, data_dir):
    full = read_csv(data_dir/'raccoon/data/raccoon_labels.csv')
    assert len(full) == 200 and sum(len(r.labels) for r in full) == 217
    assert _by_file(full) == _by_file(voc)
    split = read_csv(data_dir/'raccoon/data/train_labels.csv', valid_csv=data_dir/'raccoon/data/test_labels.csv')
    assert len(split) == 200 and len(split.valid_idx) == 40
    assert sum(len(split[i].labels) for i in split.valid_idx) == 44
    assert _by_file(split) == _by_file(voc)

def test_kaggle_wheat_form_same_boxes(voc, data_dir):
    "The raccoon CSV rewritten as a Kaggle-wheat table (`image_id` without extension, `bbox` = '[x, y, w, h]')."
    df = pd.read_csv(data_dir/'raccoon/data/raccoon_labels.csv')
    xywh = convert_boxes(torch.tensor(df[['xmin', 'ymin', 'xmax', 'ymax']].values, dtype=torch.float32), 'xyxy', 'xywh')
    wheat = pd.DataFrame(dict(image_id=df.filename.str.replace('.jpg', ''), width=df.width, height=df.height,
                              bbox=[str(b) for b in xywh.tolist()], source='raccoon'))
    recs = read_df(wheat, data_dir/'raccoon/images', file_col='image_id', label='raccoon')
    assert _by_file(recs) == _by_file(voc)

def _one_batch(dls, n_classes):
    x, boxes, labels = dls.one_batch()
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32
    assert isinstance(boxes, TensorBBox) and boxes.shape[:2] == labels.shape and labels.dtype == torch.int64
    assert len(dls.vocab) == n_classes + 1 and dls.vocab[0] == '#na#'
    assert labels.max() <= n_classes
    return x, boxes, labels

def test_dataloaders_from_coco(data_dir):
    dls = DetDataLoaders.from_coco(data_dir/'coco128/annotations/instances_train2017.json', **SMALL)
    assert (dls.report.images, dls.report.boxes, dls.report.negatives) == (128, 929, 2)
    assert len(dls.train_ds) + len(dls.valid_ds) == 128
    assert dls.categories[1] == 'person'
    _one_batch(dls, 80)
    # the original file, size and crowd regions stay reachable from the validation set
    v = dls.valid.items
    assert all(r.hw is not None and r.file.exists() for r in v)
    assert sum(len(r.crowd) for r in dls.train.items) + sum(len(r.crowd) for r in v) == 10

def test_dataloaders_from_yolo(data_dir):
    dls = DetDataLoaders.from_yolo(data_dir/'coco128/data.yaml', check_images=False, **SMALL)
    assert dls.report.boxes == 929 and dls.report.negatives == 2
    _one_batch(dls, 80)

def test_a_yolo_dataset_brings_its_validation_split(data_dir):
    "ultralytics' yaml `val` (HIT-UAV: images/val) is the validation set, read by `fastdet train DATA` too; coco128 names its training images as `val`: no split of its own."
    from fastdet.data.readers import read_records
    for path in (data_dir/'hit-uav', data_dir/'hit-uav'/'data.yaml'):
        recs = read_records(path)
        n_val = len(list((data_dir/'hit-uav'/'images'/'val').iterdir()))
        assert (len(recs), len(recs.valid_idx)) == (276 + n_val, n_val) == (345, 69)
        assert {recs[i].file.parent.name for i in recs.valid_idx} == {'val'} and recs[0].file.parent.name == 'train'
    assert getattr(read_records(data_dir/'coco128'/'data.yaml'), 'valid_idx', None) is None

def test_dataloaders_from_voc(data_dir):
    dls = DetDataLoaders.from_voc(data_dir/'raccoon', check_images=False, **SMALL)
    assert dls.report.boxes == 217 and len(dls.train_ds) == 160
    _one_batch(dls, 1)

def test_dataloaders_from_csv_author_split(data_dir):
    dls = DetDataLoaders.from_csv(data_dir/'raccoon/data/train_labels.csv', valid_csv=data_dir/'raccoon/data/test_labels.csv',
                                  check_images=False, **SMALL)
    assert (len(dls.train_ds), len(dls.valid_ds)) == (160, 40)
    test_names = set(pd.read_csv(data_dir/'raccoon/data/test_labels.csv').filename)
    assert {r.file.name for r in dls.valid.items} == test_names
    _one_batch(dls, 1)

def test_dataloaders_from_df_valid_col(data_dir):
    df = pd.read_csv(data_dir/'raccoon/data/raccoon_labels.csv')
    test_names = set(pd.read_csv(data_dir/'raccoon/data/test_labels.csv').filename)
    df['is_valid'] = df.filename.isin(test_names)
    dls = DetDataLoaders.from_df(df, data_dir/'raccoon/images', valid_col='is_valid', check_images=False, **SMALL)
    assert {r.file.name for r in dls.valid.items} == test_names
    _one_batch(dls, 1)

def test_batch_with_negatives_pads_and_unpads_identically(coco):
    "COCO128's two negatives and a crowded image in one real batch: `det_pad` (bb_pad) then `unpad` gives the items back."
    neg = [i for i, r in enumerate(coco) if r.is_negative]
    pos = max(range(len(coco)), key=lambda i: len(coco[i].labels))
    idx = [neg[0], pos, neg[1]]
    dls = DetDataLoaders.from_coco(coco.source, valid_idx=idx, size=64, bs=3, num_workers=0, check_images=False)
    dl = dls.valid
    assert [r.file for r in dl.items] == [coco[i].file for i in idx]
    items = [dl.do_item(i) for i in range(3)]
    x, boxes, labels = dl.one_batch()
    assert boxes.shape == (3, len(coco[pos].labels), 4)
    back = unpad(boxes, labels)
    assert [len(b) for b, l in back] == [0, len(coco[pos].labels), 0]
    for (b, l), it in zip(back, items):
        assert torch.equal(b.as_subclass(torch.Tensor), it[1].as_subclass(torch.Tensor).float())
        assert torch.equal(l.as_subclass(torch.Tensor), it[2].as_subclass(torch.Tensor).long())
    # a batch of negatives only: G = 0
    padded = det_pad([items[0], items[2]])
    B, L = torch.stack([s[1] for s in padded]), torch.stack([s[2] for s in padded])
    assert B.shape == (2, 0, 4) and L.shape == (2, 0) and L.dtype == torch.int64
    assert [len(b) for b, l in unpad(B, L)] == [0, 0]
