"""The study sections of a profile: one frozen dataclass per notebook (00-06), every field with
the meaning and unit a researcher changes it by, one module per study. `config.Profile` holds one
of each; a profile file sets them under `study00:` … `study06:`.
"""

from .study00 import Study00Config
from .study01 import Study01Config
from .study02 import Study02Config
from .study03 import Study03Config
from .study04 import Study04Config
from .study05 import Study05Config
from .study06 import Study06Config

__all__ = ["Study00Config", "Study01Config", "Study02Config", "Study03Config", "Study04Config", "Study05Config", "Study06Config"]
