from bench.procedure import main

raise SystemExit(main())
