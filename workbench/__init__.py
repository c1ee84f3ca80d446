"""workbench: notebook-driven research workbench for BERT-style MLM/NSP pretraining."""

from __future__ import annotations

from .config import DataConfig, MaskingConfig
from .errors import WorkbenchError

__all__ = ["DataConfig", "MaskingConfig", "WorkbenchError", "__version__"]
__version__ = "0.1.0"
