"""``python -m evaluation``: the same command as ``avs eval`` (:mod:`evaluation.cli`)."""

from evaluation.cli import main

raise SystemExit(main())
