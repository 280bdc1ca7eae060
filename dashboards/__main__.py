"""``python -m dashboards``: write the dashboards' JSON and provisioning files; ``--check``: say
which committed files differ from what the code generates (exit 1), for CI."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dashboards.build import HERE, files
from dashboards.catalogue import CatalogueError
from probes.output import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dashboards", description=__doc__)
    ap.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: the dashboards package)")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file differs / 只检查")
    args = ap.parse_args(argv)
    try:
        generated = files()
    except CatalogueError as e:
        print(e, file=sys.stderr)
        return EXIT_USAGE
    stale = [
        p
        for p, text in generated.items()
        if not (args.out / p).exists() or (args.out / p).read_text(encoding="utf-8") != text
    ]
    if args.check:
        for p in stale:
            print(
                f"differs from the code / 与代码生成结果不一致: {args.out / p} — run: python -m dashboards",
                file=sys.stderr,
            )
        return EXIT_PROBLEM if stale else EXIT_OK
    for p in stale:
        path = args.out / p
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(generated[p], encoding="utf-8")
    print(f"{len(generated)} files, {len(stale)} written / 已写入 under {args.out}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
