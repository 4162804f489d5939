import sys

from capsearch.cli import main

sys.exit(main())
