from bigfive.cli import main

raise SystemExit(main())
