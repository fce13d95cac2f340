import sys

from awac_robot.cli import main

sys.exit(main())
