"""`onnx-serve serve PATH` and `onnx-serve inspect PATH`: a repository, a model folder or a
single .onnx file, served or described (exit codes: 0 servable, 1 refused, 2 usage)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from app import cli
from app.repository.view import detect, problem

USAGE = 2
REPOSITORY = "repository.path"  # the flag's destination: --model-repository (cli.FLAGS)


def main(argv: Sequence[str]) -> int:
    command, rest = argv[0], list(argv[1:])
    if command == "serve":
        return serve(rest)
    from app.inspect import main as inspect_main  # imported late: onnxruntime is slow

    return inspect_main(rest)


def serve(argv: Sequence[str]) -> int:
    """The server's own flags, with PATH in place of --model-repository."""
    parser = cli.build_parser()
    parser.prog = "onnx-serve serve"
    parser.description = ("Serve PATH: a model repository, one model's folder (with "
                          "numbered version folders), or one .onnx file (served as model "
                          "<file stem>, version 1, straight from where it is). Every other "
                          "flag is the server's.")
    parser.add_argument("path", metavar="PATH", type=Path)
    args = parser.parse_args(argv)
    if getattr(args, REPOSITORY) is not None:
        parser.error("give PATH or --model-repository/--model-store, not both")
    path: Path = args.path
    layout = detect(path) if path.exists() else "repository"
    wrong = problem(path, layout) if path.exists() else f"'{path}' does not exist"
    if wrong is not None:
        print(f"onnx-serve serve: error: {wrong}", file=sys.stderr)
        return USAGE
    setattr(args, REPOSITORY, str(path))
    return cli.start(args, layout)
