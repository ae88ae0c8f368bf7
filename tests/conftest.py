import os, shutil, tempfile
from pathlib import Path
import pytest

def pytest_configure(config):
    "One model cache for the session: the docs build and the learning tests share the detectors they train (`$FASTDET_CACHE` if set, else a fresh folder, removed at the end)."
    if not os.environ.get('FASTDET_CACHE'):
        config._fastdet_cache = tempfile.mkdtemp(prefix='fastdet_cache_')
        os.environ['FASTDET_CACHE'] = config._fastdet_cache

def pytest_unconfigure(config):
    d = getattr(config, '_fastdet_cache', None)
    if d: shutil.rmtree(d, ignore_errors=True)

@pytest.fixture(scope='session')
def data_dir():
    "The shared real datasets: `$FASTDET_TEST_DATA`; skip when unset, fail when set but missing."
    d = os.environ.get('FASTDET_TEST_DATA')
    if not d: pytest.skip('FASTDET_TEST_DATA is not set: real-data tests need ../shared/data')
    p = Path(d)
    if not (p/'coco128').is_dir(): raise FileNotFoundError(f'FASTDET_TEST_DATA={d} has no coco128/ folder')
    return p


def pad_items(items:list, length:int=None)->tuple:
    "Per-image `(boxes [G_i, 4], labels [G_i][, scores [G_i]])` as one batch zero-padded as fastai's `bb_pad` pads it."
    import torch
    from fastdet.boxes import pad_detections
    img = torch.cat([torch.full((len(it[1]),), i, dtype=torch.long) for i, it in enumerate(items)])
    cols = [torch.cat([torch.as_tensor(it[j]).as_subclass(torch.Tensor) for it in items]) for j in range(len(items[0]))]
    scores = cols[2] if len(cols) > 2 else torch.zeros(len(img))
    n = max(len(it[1]) for it in items) if length is None else length
    b, l, s = pad_detections(img, cols[0].reshape(-1, 4), cols[1], scores, len(items), n)
    return (b, l, s) if len(cols) > 2 else (b, l)
