import sys

from avs.cli import main

sys.exit(main())
