"""The verdict table across tasks: docs/VERDICTS.md.

    python scripts/verdicts.py                    # the five fair-grid sweeps, then docs/VERDICTS.md
    python scripts/verdicts.py --no-sweeps        # only render again from the store
"""

from xentlab.report.verdicts import main

if __name__ == "__main__":
    main()
