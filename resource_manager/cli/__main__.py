"""python -m resource_manager.cli"""

import sys

from .main import main

sys.exit(main())
