"""`perception train`: train the BEV ViT on the simulated world (the training loop, its
configuration and what it writes are in perception/train.py)."""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields

log = logging.getLogger("perception.train")


def build_parser() -> argparse.ArgumentParser:
    from perception import train
    from perception.train import TrainConfig

    p = argparse.ArgumentParser(prog="perception train", description=train.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(TrainConfig):
        kind = type(f.default)
        if kind is bool:
            p.add_argument(f"--{f.name.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=f.default)
        else:
            p.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default, help=f"(default {f.default})")
    p.add_argument("--recipe", choices=sorted(train.RECIPES), default="shipped",
                   help="start from a named recipe: shipped (the shipped model, the defaults shown) or quick "
                        f"({train.RECIPES['quick']}, for experiments); explicit flags override it")
    p.add_argument("--model-config", default=None,
                   help="model config YAML (default: the defaults of perception.model.config.ModelConfig)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override model config fields, e.g. --set heads=1 or --set use_position_embedding=false token_depth=false")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.safetensors")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of progress bars")
    return p


def parse_overrides(pairs: list[str]) -> dict:
    """KEY=VALUE pairs of --set -> {key: YAML-parsed value}."""
    import yaml

    from perception.config import ConfigError

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        k, v = pair.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def parse(argv=None) -> argparse.Namespace:
    """Arguments with the chosen recipe's values as defaults (explicit flags win)."""
    from perception.train import RECIPES

    p = build_parser()
    recipe = p.parse_known_args(argv)[0].recipe
    p.set_defaults(**RECIPES[recipe])
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    from perception.logs import setup_logging

    setup_logging("INFO")
    from perception.config import ConfigError
    from perception.model.config import ModelConfig, load_model_config, replace_config
    from perception.train import TrainConfig, train

    tc = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    try:
        model_cfg = load_model_config(args.model_config) if args.model_config else ModelConfig()
        model_cfg = replace_config(model_cfg, **parse_overrides(args.set))
    except (ConfigError, TypeError) as e:
        log.error("%s", e)
        return 2
    train(tc, model_cfg, resume=args.resume, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
