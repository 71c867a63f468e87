"""`python -m genops.cli ARGS` (how torchrun starts each training rank) is `genops ARGS`."""

import sys

from genops.cli.main import main

sys.exit(main())
