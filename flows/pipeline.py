"""Run the genops pipeline flow on a workspace: `python flows/pipeline.py [WORKSPACE]`.

The flow itself lives in the package (genops.orchestration.flow); `genops pipeline` is the usual way in.
"""

from __future__ import annotations

import sys

from genops.orchestration.flow import genops_pipeline

if __name__ == "__main__":
    genops_pipeline(sys.argv[1] if len(sys.argv) > 1 else ".")
