"""``python -m madm_pl.synthetic``: write the synthetic world (the console script ``madm-pl-data``)."""

import sys

from madm_pl.synthetic.writer import main

if __name__ == "__main__":
    sys.exit(main())
