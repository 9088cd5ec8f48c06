"""Generates equilibrium reference samples of a molecule by replica-exchange MD.

The same as ``cmtjax reference`` (``cmtjax/io/reference_generation.py`` holds the code and the
options; ``--system`` is another name for ``--target``). Example, the shipped alanine-dipeptide
files (see experiments/molecules/REFERENCE.md):

  nice -n 10 python experiments/molecules/generate_reference.py --system aldp \
      --ship cmtjax/targets/molecules/data/aldp_reference.npz
"""

from cmtjax.io.reference_generation import main

if __name__ == "__main__":
  main()
