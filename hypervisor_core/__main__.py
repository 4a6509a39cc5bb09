import sys

from hypervisor_core.firstboot import main

sys.exit(main())
