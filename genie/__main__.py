from genie.cli import main

raise SystemExit(main())
