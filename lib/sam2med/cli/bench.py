"""`main.py bench`: being written (see its issue)."""

HELP = "bench (in progress)"
DESCRIPTION = HELP


def add_arguments(parser):
    pass


def run(args):
    raise NotImplementedError("bench is being written")
