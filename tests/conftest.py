import os
from pathlib import Path
import pytest

@pytest.fixture(scope='session')
def data_dir():
    "The shared real datasets: `$FASTDET_TEST_DATA`; skip when unset, fail when set but missing."
    d = os.environ.get('FASTDET_TEST_DATA')
    if not d: pytest.skip('FASTDET_TEST_DATA is not set: real-data tests need ../shared/data')
    p = Path(d)
    if not (p/'coco128').is_dir(): raise FileNotFoundError(f'FASTDET_TEST_DATA={d} has no coco128/ folder')
    return p
