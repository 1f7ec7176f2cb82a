"""``python -m hpsearch``: the same as the ``hpsearch`` command."""

from hpsearch.search.cli import main

raise SystemExit(main())
