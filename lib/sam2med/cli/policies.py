"""Tracking-policy options (auto range, memory) shared by `propagate` and `evaluate`."""

from __future__ import annotations

import argparse

from sam2med.engine.policies import MEMORY_POLICIES, AutoRange, parse_memory
from sam2med.errors import InputError

_DEFAULT_RULE = AutoRange()


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("tracking policies (docs/evaluation.md, Tracking policies)")
    group.add_argument("--absent-slices", type=int, default=None, metavar="K",
                       help=f"with --range auto: a label stops in a direction after K consecutive slices without it "
                            f"(default {_DEFAULT_RULE.absent_slices})")
    group.add_argument("--min-object-score", type=float, default=None, metavar="P",
                       help=f"with --range auto: a slice whose SAM2 object score is under P counts as without the label "
                            f"(default {_DEFAULT_RULE.min_object_score})")
    group.add_argument("--max-slices", type=int, default=None, metavar="N",
                       help="with --range auto: track at most N slices beyond the seeds in each direction")
    group.add_argument("--memory", default=None, choices=list(MEMORY_POLICIES),
                       help="memory frames conditioning each slice: recent (SAM2's own: the last frames) or selective "
                            "(MedSAM-2: the most confident, least alike frames, in any order); default: recent "
                            "(evaluate --protocol one-prompt: selective)")


def auto_rule(args: argparse.Namespace, auto: bool) -> AutoRange | None:
    """The `AutoRange` of --range auto and its options; the options without --range auto are an error."""
    given = {name: getattr(args, name) for name in ("absent_slices", "min_object_score", "max_slices")
             if getattr(args, name) is not None}
    if not auto:
        if given:
            raise InputError(f"--{next(iter(given)).replace('_', '-')} applies to --range auto only")
        return None
    return AutoRange(**given)


def policy_options(args: argparse.Namespace, auto: bool) -> dict:
    """The engine's `auto` and `memory` arguments from the command line."""
    return {"auto": auto_rule(args, auto), "memory": parse_memory(args.memory)}
