"""``python -m dslm_zoo.train RECIPE --out RUN_DIR`` (also the module torchrun starts)."""
import sys

from .cli import main

sys.exit(main())
