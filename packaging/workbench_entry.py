"""The bundle's executable: `workbench` with no command opens the app, `workbench train ...` runs the
CLI, exactly as the installed console script does (workbench.cli.main)."""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()  # Windows/macOS spawn: a child process must not start the app again
    from workbench.cli import main

    sys.exit(main())
