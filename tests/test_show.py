"show_batch draws boxes where the objects are after Resize (fastai issues #2786/#2798), negatives included."
import matplotlib; matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image
from fastdet.data.records import DetRecord
from fastdet.data.core import DetDataLoaders

def _canvas(fig):
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)

@pytest.mark.parametrize('size', [(96, 160), 128])
def test_show_batch_box_edges(tmp_path, size):
    W, H, box = 300, 200, (60, 40, 180, 150)  # an image not of the model's size, a red object at `box`
    recs = []
    for i in range(4):
        a = np.zeros((H, W, 3), np.uint8)
        if i % 2 == 0: a[box[1]:box[3], box[0]:box[2]] = (255, 0, 0)
        Image.fromarray(a).save(tmp_path/f'{i}.png')
        recs.append(DetRecord(tmp_path/f'{i}.png', [box] if i % 2 == 0 else [], ['thing'] if i % 2 == 0 else []))
    dls = DetDataLoaders.from_records(recs, size=size, bs=4, valid_pct=0, num_workers=0)
    dls.train.shuffle = False
    dls.show_batch(max_n=4, nrows=1, ncols=4, figsize=(16, 4))
    fig = plt.gcf(); img = _canvas(fig)
    axes = fig.axes
    h, w = (size, size) if isinstance(size, int) else size
    sx, sy = w / W, h / H
    x1, y1, x2, y2 = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
    def px(ax, x, y):
        dx, dy = ax.transData.transform((x, y))
        return int(round(img.shape[0] - dy)), int(round(dx))
    ax = axes[0]
    # on the drawn edges: the white box line
    for (x, y) in [((x1 + x2) / 2, y1), ((x1 + x2) / 2, y2), (x1, (y1 + y2) / 2), (x2, (y1 + y2) / 2)]:
        r, c = px(ax, x, y)
        assert img[r, c].min() > 200, f'no box edge at {(x, y)} (pixel {(r, c)} is {img[r, c]})'
    # well inside: the red object; well outside: black background
    r, c = px(ax, (x1 + x2) / 2, (y1 + y2) / 2); assert tuple(img[r, c]) == (255, 0, 0) or (img[r, c][0] > 200 and img[r, c][1:].max() < 60)
    r, c = px(ax, x1 / 3, y1 / 3); assert img[r, c].max() < 40
    # the negative image next to it has no box line anywhere
    neg = axes[1]
    (l, b), (rgt, t) = neg.get_window_extent().get_points()
    crop = img[int(img.shape[0] - t) + 3:int(img.shape[0] - b) - 3, int(l) + 3:int(rgt) - 3]
    assert crop.max() < 40, 'the image without objects shows a box'
    plt.close('all')
