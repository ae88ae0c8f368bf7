"""Single-shot object detection (SSD, EfficientDet) as first-class fastai citizens"""

__version__ = "0.0.1"
