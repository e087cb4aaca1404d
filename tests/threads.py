"""Running the library on a chosen number of CPU threads in tests (the model's engine, put back after)."""

from tinysr.image.enlarge import enlarge
from tinysr.ops.engine import Engine


def enlarge_on(workers, pixels, kind, model, *args, **kwargs):
    """``enlarge`` with the model's engine on ``workers`` CPU threads."""
    saved, model.engine = model.engine, Engine(workers)
    try:
        return enlarge(pixels, kind, model, *args, **kwargs)
    finally:
        model.engine = saved
