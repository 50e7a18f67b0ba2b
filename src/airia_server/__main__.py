from airia_server.cli import main

raise SystemExit(main())
