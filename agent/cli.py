"""``netwatch-agent``: the entry point. ``run`` — what a node's service executes all day — is parsed
and run by ``agent.daemon`` without the CLI framework, so a running agent never loads typer or
click; ``run --help`` and every other command go to the typer app in ``agent.cli_app``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["run"] and not {"-h", "--help"} & set(args[1:]):
        from agent.daemon import main as run_main

        sys.exit(run_main(args[1:]))
    from agent.cli_app import app

    app(args=args, prog_name="netwatch-agent")


if __name__ == "__main__":
    main()
