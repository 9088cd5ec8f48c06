"""Every command in the README (and in the docstrings of the CLI and the benchmarks) runs as
written on a fresh clone: the files it names exist, and its flags parse.

``cmtjax train`` commands are checked with ``--dry-run`` (the whole configuration is built
and validated, nothing runs); ``./dev.sh`` sub-commands against dev.sh's own list; scripts
(``python benchmarks/x.py ...``) by their existence and by ``--help``, which must list every
flag the command uses.
"""

import functools
import os
import re
import shlex
import subprocess
import sys

import pytest

from cmtjax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bash_blocks(markdown: str) -> list[str]:
  return re.findall(r"```bash\n(.*?)```", markdown, flags=re.S)


def _commands(text: str) -> list[str]:
  """Joined lines (backslash continuations), comments and a trailing '&' removed."""
  out, cur = [], ""
  for line in text.splitlines():
    line = line.rstrip()
    if line.endswith("\\"):
      cur += line[:-1] + " "
      continue
    cur += line
    cmd = cur.split(" #")[0].strip() if not cur.lstrip().startswith("#") else ""
    cur = ""
    cmd = cmd.rstrip("&").strip()
    if cmd:
      out.append(cmd)
  return out


def _readme_commands() -> list[str]:
  with open(os.path.join(ROOT, "README.md")) as f:
    return [c for block in _bash_blocks(f.read()) for c in _commands(block)]


def _docstring_commands() -> list[str]:
  """``cmtjax ...`` lines of the CLI's docstring and ``python benchmarks/...`` of the scripts'."""
  cmds = []
  doc = cli.__doc__ or ""
  for line in doc.splitlines():
    line = line.strip()
    if line.startswith("cmtjax "):
      cmds.append(re.split(r"\s{2,}\(", line)[0].strip())
  bench = os.path.join(ROOT, "benchmarks")
  for name in sorted(os.listdir(bench)):
    if name.endswith(".py"):
      with open(os.path.join(bench, name)) as f:
        head = f.read().split('"""')
      if len(head) > 1:
        cmds += [c for c in _commands(head[1]) if re.match(r"(\.venv/bin/)?python \S+\.py", c)]
  return cmds


def _dev_sh_subcommands() -> set[str]:
  with open(os.path.join(ROOT, "dev.sh")) as f:
    return set(re.findall(r"^\s+([a-z]+)\)", f.read(), flags=re.M))


ALL = _readme_commands() + _docstring_commands()


def test_the_readme_has_its_two_commands():
  cmds = _readme_commands()
  assert "./dev.sh demo" in [c.split(" #")[0].strip() for c in cmds]
  assert any(c.startswith("./dev.sh test") for c in cmds)


def _check_cmtjax(args: list[str], tmp_path) -> None:
  if args[0] != "train":
    # sample / evaluate need a finished run, reference runs MD: the flags must parse, and the
    # input files they name (other than runs and their outputs) must exist.
    parsed = cli._parser().parse_args(args)
    target = getattr(parsed, "target", None)
    if target and (target.endswith(".pdb") or ":" in target):
      assert os.path.isfile(os.path.join(ROOT, target.split(":")[0])), target
    return
  if "--resume" in args or "--branch-from" in args or any(a.startswith("runs/") and a.endswith(".json") for a in args):
    # A resume, a branch or a repeat needs an earlier run's folder (runs/...): the flags must
    # parse.
    cli._parser().parse_args(args)
    return
  for flag in ("--config",):
    if flag in args:
      path = args[args.index(flag) + 1]
      assert os.path.isfile(os.path.join(ROOT, path)), f"{path} (named by {flag}) is missing"
  args = [a if not a.startswith("runs/") else str(tmp_path / a) for a in args]
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    assert cli.main([*args, "--dry-run"]) == 0
  finally:
    os.chdir(cwd)


@functools.lru_cache(maxsize=None)
def _help(script: str) -> str:
  res = subprocess.run([sys.executable, os.path.join(ROOT, script), "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-2000:]
  return res.stdout


def _check_script(argv: list[str]) -> None:
  script = argv[0]
  assert os.path.isfile(os.path.join(ROOT, script)), f"{script} is missing"
  flags = {a.split("=")[0] for a in argv[1:] if a.startswith("--")}
  for flag in flags:
    assert re.search(re.escape(flag) + r"\b", _help(script)), f"{script} has no flag {flag}"


@pytest.mark.parametrize("command", ALL)
def test_command_runs_as_written(command, tmp_path):
  argv = shlex.split(command)
  if argv[0] == "source":
    assert os.path.isfile(os.path.join(ROOT, "dev.sh"))  # the venv comes from dev.sh setup
    return
  if argv[0] == "./dev.sh":
    assert argv[1] in _dev_sh_subcommands(), f"dev.sh has no sub-command {argv[1]!r}"
    if argv[1] == "cmtjax":
      _check_cmtjax(argv[2:], tmp_path)
    return
  if argv[0] == "cmtjax":
    _check_cmtjax(argv[1:], tmp_path)
    return
  if argv[0] in ("python", ".venv/bin/python"):
    _check_script(argv[1:])
    return
  pytest.fail(f"no check for this kind of command: {command}")
