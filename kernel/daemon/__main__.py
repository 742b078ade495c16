import sys

from kernel.daemon.main import main

sys.exit(main())
