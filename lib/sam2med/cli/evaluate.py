"""`main.py evaluate`: being written (see its issue)."""

HELP = "evaluate (in progress)"
DESCRIPTION = HELP


def add_arguments(parser):
    pass


def run(args):
    raise NotImplementedError("evaluate is being written")
