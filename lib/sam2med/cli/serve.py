"""`main.py serve`: being written (see its issue)."""

HELP = "serve (in progress)"
DESCRIPTION = HELP


def add_arguments(parser):
    pass


def run(args):
    raise NotImplementedError("serve is being written")
