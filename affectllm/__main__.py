import sys

from affectllm.cli.main import main

sys.exit(main())
