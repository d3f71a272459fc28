"""`python -m chatclient ...` runs the terminal client."""
from chatclient.terminal import main

raise SystemExit(main())
