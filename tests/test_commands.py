"""The commands live in perception/commands/ and nowhere else: every verb answers --help with its
options, the library packages hold no command-line code, the engine runtime does not depend on
the fusion node, and the process configs' defaults are the commands' defaults."""
import ast
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from perception import cli
from perception.config import REPO_ROOT, CameraProcessConfig, FusionNodeConfig

PACKAGE = REPO_ROOT / "perception"
LIBRARY_PACKAGES = ("model", "runtime", "sim", "fusion", "cameras")

# one option each verb must list in its --help
VERB_OPTION = {"launch": "--duration", "camera": "--name", "fuse": "--backend", "echo": "--json", "hz": "--window",
               "train": "--steps", "eval": "--scenes", "render": "--overlay", "export": "--opset",
               "build-engine": "--dry-run", "bench": "--backends", "keys": "--dir",
               "record": "--duration", "replay": "--offline", "view": "--save",
               "fleet": "--address", "rigs": "generate"}


def test_every_verb_is_covered_here():
    assert set(VERB_OPTION) == set(cli.VERBS)
    for module, _ in cli.VERBS.values():
        assert module.startswith("perception.commands."), module


@pytest.mark.parametrize("verb", sorted(VERB_OPTION))
def test_verb_help_exits_0_and_lists_its_options(verb, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([verb, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: perception {verb}") and VERB_OPTION[verb] in out and "--help" in out


def test_model_bench_help(capsys):
    from perception.commands import model_bench

    with pytest.raises(SystemExit) as e:
        model_bench.main(["--help"])
    assert e.value.code == 0
    assert "--batch" in capsys.readouterr().out


def test_top_level_help_is_cheap():
    """`perception --help` lists the verbs without importing torch or any command module."""
    code = ("import sys; from perception.cli import main; main(['--help']); "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('perception.commands.')]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert all(verb in r.stdout for verb in cli.VERBS)


def _modules(*packages: str):
    for pkg in packages:
        for path in sorted((PACKAGE / pkg).rglob("*.py")):
            yield path, ast.parse(path.read_text(), str(path))


def _imported(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_library_packages_have_no_command_line_code():
    for path, tree in _modules(*LIBRARY_PACKAGES):
        rel = path.relative_to(REPO_ROOT)
        assert not any(n == "argparse" or n.startswith("argparse.") for n in _imported(tree)), f"{rel} imports argparse"
        defs = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        assert "main" not in defs, f"{rel} defines main"
        mains = [n for n in ast.walk(tree) if isinstance(n, ast.Compare) and isinstance(n.left, ast.Name)
                 and n.left.id == "__name__"]
        assert not mains, f"{rel} has an `if __name__ == ...` block"


def test_runtime_does_not_import_fusion():
    for path, tree in _modules("runtime"):
        bad = {n for n in _imported(tree) if n == "perception.fusion" or n.startswith("perception.fusion.")}
        assert not bad, f"{path.relative_to(REPO_ROOT)} imports {sorted(bad)}"


def test_example_inputs_is_defined_once():
    where = []
    for root in ("perception", "scripts", "tests"):
        for path in sorted((REPO_ROOT / root).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            if any(isinstance(n, ast.FunctionDef) and n.name == "example_inputs" for n in ast.walk(tree)):
                where.append(str(path.relative_to(REPO_ROOT)))
    assert where == ["perception/inputs.py"]


@pytest.mark.parametrize("verb, config, required", [("camera", CameraProcessConfig, ["--name", "front"]),
                                                     ("fuse", FusionNodeConfig, [])])
def test_process_configs_come_from_the_arguments_with_the_dataclass_defaults(verb, config, required):
    """No arguments -> the dataclass's own defaults; every field has an option."""
    import importlib

    cmd = importlib.import_module(cli.VERBS[verb][0])
    args = cmd.build_parser().parse_args(required)
    built = cmd.config_from(args)
    expected = config(name="front") if config is CameraProcessConfig else config()
    assert built == expected
    options = {a.dest for a in cmd.build_parser()._actions}
    for f in fields(config):
        assert f.name in options or f"no_{f.name}" in options, f"{config.__name__}.{f.name} has no option"


def test_fuse_arguments_reach_the_config():
    from perception.commands.fuse import build_parser, config_from

    c = config_from(build_parser().parse_args(["--camera-endpoints", "ipc://a", "ipc://b", "--no-online-score",
                                                "--threads", "1", "--backend", "torch", "--duration", "2"]))
    assert c == FusionNodeConfig(camera_endpoints=("ipc://a", "ipc://b"), online_score=False, threads=1,
                                 backend="torch", duration=2.0)


def test_no_stale_module_paths():
    """Modules that moved into perception/commands/ are named nowhere under their old paths."""
    stale = ("perception.sim.cli", "perception/sim/cli.py", "perception.tools.echo", "perception.tools.hz",
             "perception.tools.topics", "perception.runtime.bench import make_frameset",
             "perception.runtime.bench import scene_frames", "python -m perception.model.bench")
    hits = []
    for dirpath, dirnames, filenames in os.walk(REPO_ROOT):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in ("out", "runs", "__pycache__")]
        for name in filenames:
            path = Path(dirpath) / name
            if path.suffix not in (".py", ".yaml", ".md", ".sh", ".toml") or path == Path(__file__).resolve():
                continue
            text = path.read_text(errors="replace")
            hits += [f"{path.relative_to(REPO_ROOT)}: {s}" for s in stale if s in text]
    assert not hits
