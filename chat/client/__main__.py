"""`python -m chat.client ...` runs the terminal client."""
from chat.client.terminal import main

raise SystemExit(main())
