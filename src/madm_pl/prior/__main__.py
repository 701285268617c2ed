"""``python -m madm_pl.prior``: train the tiny diffusion prior (``make prior``)."""

import sys

from madm_pl.prior.train import main

if __name__ == "__main__":
    sys.exit(main())
