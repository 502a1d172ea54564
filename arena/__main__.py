"""`python -m arena ...` (what torchrun runs on every rank: `torchrun -m arena train ...`)."""

import sys

from arena.cli import main

sys.exit(main())
