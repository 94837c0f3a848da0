import sys

if "--workers" in sys.argv[1:]:
    # The workers dimension (issue 19) is its own run: python -m bench.scaling
    from bench.scaling import main as scaling_main

    raise SystemExit(scaling_main(sys.argv[1:]))

from bench.cli import main

raise SystemExit(main())
