"""The `triserve` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from workers.engine.model_writer import PRESETS, ensure_model, write_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="triserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    make = commands.add_parser("make-model", help="write a random-weight LLaVA checkpoint")
    make.add_argument("dir", type=Path)
    make.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    make.set_defaults(run=_make_model)

    gen = commands.add_parser("generate", help="generate text for one prompt")
    gen.add_argument("--local", action="store_true", help="run the engine in this process")
    gen.add_argument("--model", type=Path, help="checkpoint directory (default: the tiny preset)")
    gen.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    gen.add_argument(
        "--prompt", required=True, help="raw text; each <image> takes the next --image"
    )
    gen.add_argument("--image", action="append", default=[], type=Path, help="PNG or JPEG file")
    gen.add_argument("--max-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    gen.add_argument("--ignore-eos", action="store_true")
    gen.add_argument("--device", default="cpu")
    gen.add_argument("--dtype", default="float32")
    gen.add_argument("--json", action="store_true", help='print {"token_ids": [...], "text": ...}')
    gen.set_defaults(run=_generate)

    args = parser.parse_args(argv)
    return args.run(args)


def _make_model(args: argparse.Namespace) -> int:
    if (args.dir / "config.json").exists():
        print(f"error: {args.dir} already holds a checkpoint", file=sys.stderr)
        return 2
    write_checkpoint(args.dir, args.preset)
    print(f"wrote the {args.preset} checkpoint to {args.dir}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    if not args.local:
        print("error: only --local is available in this version", file=sys.stderr)
        return 2
    from workers.engine.errors import InvalidRequestError
    from workers.engine.local import generate_local

    model_dir = args.model or ensure_model(args.preset)
    try:
        result = generate_local(args, model_dir)
    except InvalidRequestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"token_ids": result.token_ids, "text": result.text}))
    else:
        print(result.text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
