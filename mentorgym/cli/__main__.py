import sys

from mentorgym.cli import main

sys.exit(main())
