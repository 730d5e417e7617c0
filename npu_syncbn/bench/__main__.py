"""``python -m npu_syncbn.bench``."""
import sys

from .cli import main

sys.exit(main())
