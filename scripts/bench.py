"""Benchmark: xentlab's training path against a bare PyTorch loop, in one process, one run.

    python scripts/bench.py                       # CPU here, the GPU where there is one
    python scripts/bench.py --batch-sizes 128 512 --epochs 3 --json bench.json
    python scripts/bench.py --mode sweep --json bench-sweep.json   # launchers, per-job overhead

The code, and what each variant measures, is ``xentlab.bench``.
"""

from xentlab.bench import main

if __name__ == "__main__":
    main()
