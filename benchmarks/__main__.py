"""``python -m benchmarks [--quick] [--only NAME ...]``: see :mod:`benchmarks.run`."""

from .run import main

raise SystemExit(main())
