"""One-way layering: the library (`pbrl/`) never names the tasks package; tasks arrive through entry points."""

import ast
import importlib.metadata
import pathlib
import subprocess
import sys

import pbrl
from pbrl import cli, plugins

LIBRARY = pathlib.Path(pbrl.__file__).resolve().parent
TASKS = "pbrl_envs"


def _names_tasks(value: str) -> bool:
    return value == TASKS or value.startswith((TASKS + ".", TASKS + ":"))


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def layering_violations(root: pathlib.Path) -> list[str]:
    """Imports of the tasks package and string targets naming it ("pbrl_envs.x:Y", import_module("pbrl_envs"))
    anywhere under `root`; docstrings may mention it."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        docs = _docstring_nodes(tree)
        for node in ast.walk(tree):
            where = f"{path.relative_to(root.parent)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                bad += [f"{where} import {a.name}" for a in node.names if _names_tasks(a.name)]
            elif isinstance(node, ast.ImportFrom) and node.module and _names_tasks(node.module):
                bad.append(f"{where} from {node.module} import ...")
            elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
                  and _names_tasks(node.value.strip())):
                bad.append(f"{where} string {node.value!r}")
    return bad


def test_the_library_never_names_the_tasks_package():
    assert layering_violations(LIBRARY) == []


def test_the_check_finds_each_kind_of_reference(tmp_path):
    pkg = tmp_path / "lib"
    pkg.mkdir()
    (pkg / "a.py").write_text('"""Docstrings may say pbrl_envs.suite."""\nimport pbrl_envs\n')
    (pkg / "b.py").write_text("from pbrl_envs.recsim import RecSimEnv\n")
    (pkg / "c.py").write_text('T = {"x": "pbrl_envs.commands:DataList"}\n')
    (pkg / "d.py").write_text('import importlib\nimportlib.import_module("pbrl_envs")\n')
    (pkg / "e.py").write_text('def f():\n    """pbrl_envs:register is fine here."""\n    return "pbrl_envsx"\n')
    found = layering_violations(pkg)
    assert [f.split(":")[0] for f in found] == ["lib/a.py", "lib/b.py", "lib/c.py", "lib/d.py"]


def test_tasks_register_through_entry_points():
    tasks = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=plugins.TASKS_GROUP)}
    commands = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=plugins.COMMANDS_GROUP)}
    assert tasks.get(TASKS) == "pbrl_envs:register" and commands.get(TASKS) == "pbrl_envs:register_commands"
    from pbrl.data.recipes import recipes

    names = recipes()
    assert {"pendulum-medium-replay", "hopper-expert", "recsim-mixed"} <= set(names)
    assert TASKS in plugins.load_tasks() and plugins.load_tasks() is plugins.load_tasks()  # loaded once


def test_pbrl_help_lists_every_command_with_task_commands_from_the_entry_point():
    # a fresh process: nothing imported the tasks package before the command listed its commands
    code = ("import sys\nfrom pbrl.cli import main\nrc = main(['--help'])\n"
            "print('TASKS_IMPORTED', 'pbrl_envs.recsim' in sys.modules, 'torch' in sys.modules)\nsys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    listed = [ln for ln in r.stdout.splitlines() if ln.startswith("  pbrl ")]
    for words, (_, help_) in cli.COMMANDS.items():
        assert f"pbrl {' '.join(words)} " in r.stdout and help_ in r.stdout
    assert "pbrl rec catalog" in r.stdout and ("rec", "catalog") not in cli.COMMANDS
    assert ("rec", "catalog") in plugins.load_commands()
    assert len(listed) == len(cli.COMMANDS) + len(plugins.load_commands())
    # listing the commands does not import the task modules or torch
    assert r.stdout.strip().splitlines()[-1] == "TASKS_IMPORTED False False"


def test_register_command_rejects_a_second_target():
    cmd = plugins.load_commands()[("rec", "catalog")]
    plugins.register_command(cmd.words, cmd.target, cmd.help)  # the same registration again: a no-op
    assert plugins.TASK_COMMANDS[("rec", "catalog")] == cmd
    try:
        plugins.register_command("rec catalog", "other.module:Other", "x")
    except ValueError as e:
        assert "registered twice" in str(e)
    else:
        raise AssertionError("a second target for the same words was accepted")


def test_pbrl_help_says_what_pbrl_is(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    first = out.split("\n\n")[0].replace("\n", " ")
    assert first == cli.ABOUT and first.startswith("pbrl is a library") and first.count(". ") == 0


def test_every_command_help_names_its_arguments(capsys):
    """No `{None}|INT` in any command's help (optional options show their type) and no positional named `STR`."""
    import re

    for words in cli.all_commands():
        try:
            cli.main([*words, "--help"])
        except SystemExit as e:
            assert e.code == 0, words
        text = capsys.readouterr()
        help_ = text.out + text.err
        usage = help_.split("\n\n")[0]
        assert help_.startswith(f"usage: pbrl {' '.join(words)}"), words
        assert "{None}" not in help_, (words, re.findall(r"--\S+ \{None\}\S*", help_))
        positionals = re.sub(r"\[[^\]]*\]|--\S+ \S+", "", usage.split(" ", 2 + len(words))[-1])
        assert "STR" not in positionals.split(), (words, usage)
