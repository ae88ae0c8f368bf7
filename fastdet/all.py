"Everything a user needs: `from fastdet.all import *`."
from .boxes import *
from .data.records import *
from .data.shapes import *
from .data.readers import *
from .data.core import *
from .data.augment import *
from .anchors.ssd import *
from .anchors.efficientdet import *
from .models.ssd import *
from .models.efficientdet import *
from .losses.ssd import *
from .losses.efficientdet import *
from .learner import *
from .metrics import *
from .interpret import *
from .distrib import *
from .deploy import *
