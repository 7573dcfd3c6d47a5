"""`python -m probe` is the same as the `notifyprobe` console script."""

from probe.cli import main

raise SystemExit(main())
