from sfc_core.cli import main

raise SystemExit(main())
