"""`import cmtjax` and the CLI's help import no jax; lazy exports survive submodule imports."""

import subprocess
import sys


def test_import_cmtjax_and_the_cli_import_no_jax():
  code = ("import sys, cmtjax, cmtjax.cli, cmtjax.methods, cmtjax.targets; "
          "assert 'jax' not in sys.modules, 'jax imported'; "
          "from cmtjax.methods import method_names; from cmtjax.targets import TARGET_NAMES; "
          "assert 'cmt' in method_names() and 'gmm40' in TARGET_NAMES; "
          "assert 'jax' not in sys.modules")
  subprocess.run([sys.executable, "-c", code], check=True)


def test_an_export_named_like_its_submodule_stays_the_function():
  import cmtjax
  import cmtjax.targets
  import cmtjax.targets.gmm  # noqa: F401 - binds the submodule on import
  import cmtjax.train.loop  # noqa: F401
  from cmtjax.targets import gmm, make_target
  assert callable(gmm) and gmm.__name__ == "gmm"
  assert make_target("gmm40").dim == 2
  assert callable(cmtjax.train) and cmtjax.train.__name__ == "train"
  from cmtjax.targets.gmm import gmm_means  # the submodule itself is still importable
  assert callable(gmm_means)
