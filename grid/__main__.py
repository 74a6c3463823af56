from grid.cli.main import main

raise SystemExit(main())
