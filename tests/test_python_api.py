"""The Python API: the README's snippet as it stands, the method builders, load_run, and the
checks at the boundary (each a clear error naming the problem)."""

from __future__ import annotations

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cmtjax
from cmtjax.io.config import ConfigError

README = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")


def _readme_snippet() -> str:
  text = open(README).read()
  m = re.search(r"<!-- python-api-snippet -->\n```python\n(.*?)```", text, re.S)
  assert m, "the README lost its Python API snippet"
  return m.group(1)


@pytest.mark.slow
def test_the_readme_snippet_runs_and_writes_the_run_folder(tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  namespace: dict = {}
  exec(compile(_readme_snippet(), "README.md", "exec"), namespace)  # pylint: disable=exec-used
  out = tmp_path / "runs" / "two_wells"
  for name in ("config.json", "metrics.json", "steps.jsonl", "params.msgpack", "samples.npz",
               "samples.png", "schedule.png"):
    assert (out / name).is_file(), name
  run = namespace["run"]
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["target_evals"] <= 100_000 and metrics["reverse_ess"] == run.metrics["reverse_ess"]
  # The snippet's claims: a usable flow and the right log Z (log 2 + 3 log 2 pi).
  assert run.metrics["reverse_ess"] > 0.5
  assert abs(run.metrics["log_z"] - (np.log(2) + 3 * np.log(2 * np.pi))) < 0.05
  printed = capsys.readouterr().out
  p = float(re.search(r"P\(x_0 > 0\) = ([0-9.]+)", printed).group(1))
  assert abs(p - 0.5) < 0.1
  # Reopened: the same flow, more samples, the same evaluation.
  again = cmtjax.load_run(str(out), target=namespace["target"])
  s = again.sample(100, seed=1)
  np.testing.assert_allclose(s["log_q"], run.sample(100, seed=1)["log_q"], rtol=1e-6)
  with pytest.raises(ValueError, match=r"trained on a Target object \('object:two_wells'\)"):
    cmtjax.load_run(str(out))
  # Its config names no buildable target: neither the CLI nor a resume can rebuild another.
  config = json.loads((out / "config.json").read_text())
  assert config["target"] == "object:two_wells"
  from cmtjax.cli import main
  assert main(["evaluate", "--run", str(out)]) == 2
  assert "was trained on a Target object" in capsys.readouterr().err


def _target(log_prob, dim=6, name="mine"):
  return cmtjax.Target(name=name, dim=dim, log_prob=log_prob)


def test_mistakes_at_the_boundary_are_named():
  gauss = lambda x: -0.5 * jnp.sum(x**2, axis=-1)  # noqa: E731
  with pytest.raises(ConfigError, match="unknown config key 'cmt.eps_trust'"):
    cmtjax.CMT(eps_trust=0.3)
  with pytest.raises(ConfigError, match="unknown method 'sgd'"):
    cmtjax.method("sgd")
  fit = lambda target, **kw: cmtjax.fit(target, budget=1000, progress=False, **kw)  # noqa: E731
  with pytest.raises(ValueError, match=r"log_prob must return shape \[batch\] = \(3,\).*got \(\) "
                                       r"\(a scalar"):
    fit(_target(lambda x: jnp.sum(x**2)))
  with pytest.raises(ValueError, match=r"got \(3, 1\) \(\[batch, 1\]: drop the last axis\)"):
    fit(_target(lambda x: gauss(x)[:, None]))
  with pytest.raises(ValueError, match="log_prob must return a floating dtype, got int32"):
    fit(_target(lambda x: jnp.zeros(x.shape[0], jnp.int32)))
  with pytest.raises(ValueError, match=r"log_prob failed on a batch x of shape \[batch, dim\] = "
                                       r"\[3, 6\]"):
    fit(_target(lambda x: x @ jnp.ones((5,))))
  with pytest.raises(ValueError, match="dim must be a positive int"):
    fit(_target(gauss, dim=0))
  flow = cmtjax.make_flow(cmtjax.FlowConfig(dim=4, n_layers=2, hidden=(8,)))
  with pytest.raises(ValueError, match="the flow has dimension 4 but target 'mine' has "
                                       "dimension 6"):
    fit(_target(gauss), flow=flow)
  with pytest.raises(ConfigError, match="budget must be a whole number"):
    cmtjax.fit(_target(gauss), budget=0.5, progress=False)
  with pytest.raises(ValueError, match="method must be built with cmtjax.CMT"):
    cmtjax.fit(_target(gauss), "cmt", budget=1000, progress=False)
  with pytest.raises(ValueError, match="target 'nan': the target's log density was NaN"):
    cmtjax.fit(_target(lambda x: jnp.full(x.shape[:1], jnp.nan), name="nan"),
               cmtjax.CMT(n_samples=500, n_grad_steps=2, batch_size=100), budget=1000,
               flow={"n_layers": 2, "hidden": [8]}, progress=False)


def test_a_built_flow_and_a_budget_in_target_evaluations():
  target = _target(lambda x: -0.5 * jnp.sum(x**2, axis=-1), dim=3)
  flow = cmtjax.make_flow(cmtjax.FlowConfig(dim=3, n_layers=2, hidden=(8,)))
  run = cmtjax.fit(target, cmtjax.ReverseKL(batch_size=100, n_grad_steps=5), flow=flow,
                   budget=2000, progress=False, eval={"n_samples": 1000, "n_repeats": 1})
  assert run.metrics["target_evals"] == 2000 and run.flow is flow
  assert run.metrics["method"] == "reverse_kl" and run.out_dir is None
  x = run.sample(10)["positions"]
  assert x.shape == (10, 3) and np.all(np.isfinite(x))
  assert jax.tree.structure(run.params) == jax.tree.structure(flow.init(jax.random.PRNGKey(0)))


def test_a_python_file_target_is_read_again_after_a_fix(tmp_path):
  """A file that failed to import is not cached broken; an edited file is read again; the file
  can import a module next to it."""
  from cmtjax.targets import make_target
  (tmp_path / "helper_mod.py").write_text("SCALE = 2.0\n")
  path = tmp_path / "mine.py"
  path.write_text("def make(:\n")
  with pytest.raises(ValueError, match="importing .* failed with SyntaxError"):
    make_target(f"{path}:make")
  with pytest.raises(ValueError, match="failed with SyntaxError"):  # the real error again
    make_target(f"{path}:make")
  path.write_text("import jax.numpy as jnp\nimport cmtjax\nfrom helper_mod import SCALE\n"
                  "def make():\n  return cmtjax.Target(name='m', dim=2, "
                  "log_prob=lambda x: -SCALE * jnp.sum(x**2, -1))\n")
  t = make_target(f"{path}:make")
  assert float(t.log_prob(jnp.ones((1, 2)))[0]) == -4.0
