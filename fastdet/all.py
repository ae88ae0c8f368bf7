"Everything a user needs: `from fastdet.all import *`."
from .boxes import *
from .data.core import *
from .data.readers import *
from .data.shapes import *
from .anchors import *
from .models.ssd import *
from .losses.ssd import *
from .models.efficientdet import *
from .learner import *
from .metrics import *
