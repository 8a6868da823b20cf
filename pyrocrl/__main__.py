import sys

from pyrocrl.cli import main

sys.exit(main())
