"""`python -m derrumbe ...` and the `derrumbe` script: the native command line (apps/cli.cpp)."""
import sys


def main() -> int:
    from . import _derrumbe

    return _derrumbe.cli_main(["derrumbe"] + sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
