"""`python -m edgecompress.cli`: the same as the `edgecompress` command."""
import sys

from . import main

sys.exit(main())
