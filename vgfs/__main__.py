from vgfs.cli import main

raise SystemExit(main())
