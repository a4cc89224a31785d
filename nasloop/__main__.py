import sys

from nasloop.cli import main

sys.exit(main())
