"""Put what the usual articles say about cross-entropy losses to the test: docs/CLAIMS.md.

    python scripts/claims.py                        # about 17 minutes on a 2-core CPU
    python scripts/claims.py --quick --out /tmp/CLAIMS.md   # tiny data: checks the machinery

The code is ``xentlab.report.claims``.
"""

from xentlab.report.claims import main

if __name__ == "__main__":
    main()
