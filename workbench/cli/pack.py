"""`workbench pack` and `workbench unpack`: a run as one portable file, and back.

    workbench pack RUN_DIR [-o FILE.wbrun] [--with-data] [--overwrite]
    workbench unpack FILE.wbrun [-o DIR]

Both print what they did and end stdout with one JSON line. Exit status: 0 done, 2 bad input (not a
run, a refused or damaged archive, an existing target), 3 the file or folder could not be written,
130 interrupted (nothing is left behind).
"""

from __future__ import annotations

import argparse
import json
import sys

from .progress import add_quiet_flag

PACK_COMMANDS = ("pack", "unpack")


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "pack", help="write a run into one portable .wbrun file",
        description="Pack RUN_DIR's config, metrics, report, predictions and model into one .wbrun file (a zip with a "
                    "manifest of checksums). The training data is left out unless --with-data is given; the packed "
                    "config.json then still points at the data's original paths.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run folder to pack")
    p.add_argument("-o", "--output", metavar="FILE", help="the file to write (default: RUN_NAME.wbrun here)")
    p.add_argument("--with-data", action="store_true", help="include the run's train/val/test files (or image "
                   "folders), so the run can be repeated on a machine without them. Only regular files and image "
                   "dataset folders (their image files) are packed; a data path in a system folder (/etc, /proc, "
                   "/sys, /dev, /boot, /root, /var, /usr ...), a credential store (~/.ssh, ~/.aws ...), a device or "
                   "pipe, another kind of folder, or a link out of an image folder is refused (exit 2)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace FILE if it exists (only an earlier .wbrun is replaced)")
    add_quiet_flag(p)

    u = sub.add_parser(
        "unpack", help="unpack a .wbrun file into a run folder the app lists",
        description="Unpack FILE into a new run folder (default: in the runs home, where the app's Runs page lists "
                    "it). Members with absolute paths, '..', links, pickles or code are refused before anything is "
                    "written; an existing folder is never replaced. config.json keeps a data path the pack did not "
                    "carry only when that path is here and, by checksum, the data the run trained on. `workbench train "
                    "--config DIR/config.json` then repeats the run.")
    u.add_argument("archive", metavar="FILE", help="the .wbrun file")
    u.add_argument("-o", "--output", metavar="DIR", help="the run folder to create (must not exist; default: a new "
                   "folder named after the run in the runs home)")
    add_quiet_flag(u)


class _Bar:
    """A tqdm bar in bytes on stderr, created on the first report."""

    def __init__(self, enabled: bool, desc: str) -> None:
        self.enabled, self.desc, self.bar = enabled, desc, None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="B", unit_scale=True, desc=self.desc, file=sys.stderr, leave=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_pack_command(args: argparse.Namespace) -> int:
    from ..core.export.pack import pack_run, unpack_run
    from .exits import EXIT_OK
    from .interrupt import cancelled_by_ctrl_c

    bar = _Bar(not args.quiet, "packing" if args.command == "pack" else "unpacking")
    with cancelled_by_ctrl_c(bar, "workbench: cancelled; nothing was written.") as cancel:
        if args.command == "pack":
            result = pack_run(args.run_dir, args.output, with_data=args.with_data, overwrite=args.overwrite,
                              cancel=cancel, progress=bar)
            bar.close()
            print(f"packed {result.files} files ({result.bytes / 1e6:,.1f} MB) into {result.path} "
                  f"({result.archive_bytes / 1e6:,.1f} MB)")
            notes = result.notes()
        else:
            result = unpack_run(args.archive, args.output, cancel=cancel, progress=bar)
            bar.close()
            print(f"unpacked {result.files} files into {result.path}")
            print(f"repeat it: workbench train --config {result.path / 'config.json'}")
            notes = result.notes
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(json.dumps({**result.summary(), "notes": notes}))
    return EXIT_OK
