"Everything a user needs: `from fastdet.all import *`."
from .boxes import *
from .data.core import *
from .data.shapes import *
