"""Fair comparison: tune the learning rate of every loss, then rerun each best with seeds.

    python scripts/tune.py --task mnist
    python scripts/tune.py --task binary --losses bce,mse --trials 8 --seeds 0,1,2 -- data.subset=20000
    python scripts/tune.py --task file -- task.path=data/examples/digits.npz

The code is ``xentlab.tune``.
"""

from xentlab.tune import main

if __name__ == "__main__":
    main()
