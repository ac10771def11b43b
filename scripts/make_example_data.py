"""Write small real data sets as files ``task=file`` reads: scikit-learn's own copies, offline.

    python scripts/make_example_data.py            # into data/examples/
    python run.py task=file task.path=data/examples/breast_cancer.npz loss=bce

The code, and what each file holds, is ``xentlab.tasks.examples``.
"""

from xentlab.tasks.examples import main

if __name__ == "__main__":
    main()
