"""Single-shot object detection (SSD, EfficientDet) as first-class fastai citizens"""

__version__ = "0.0.1"

import warnings as _warnings
# fastai (layers.py) and effdet (object_detection) decorate functions with `torch.jit.script` on import, which torch 2.9+
# deprecates with a FutureWarning that the user can't act on: silenced for that message only, where fastdet imports them.
_warnings.filterwarnings('ignore', message=r'`torch\.jit\.script` is deprecated', category=FutureWarning)
