"""Every code example runs: the Python blocks of the READMEs and the doctests of every public module are executed,
with pretrained names swapped for local weights this test writes (tiny versions of the same architectures); every
command line in the READMEs, the recipes' docstrings and the configs' headers is parsed by the real parser and its
config loaded. The README quick start's second command is what CI runs."""

from __future__ import annotations

import ast
import doctest
import importlib
import importlib.util
import pkgutil
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import timm
from safetensors.torch import save_file

import adaptkit
import recipes

REPO = Path(__file__).resolve().parents[1]
READMES = [REPO / "README.md", REPO / "recipes" / "README.md"]
TINY = {"depth": 1, "embed_dim": 32, "num_heads": 2}  # same family, patch and input size; tiny width and depth


def code_blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(encoding="utf-8"), re.DOTALL | re.MULTILINE)


def modules(package) -> list[str]:  # noqa: ANN001
    return [package.__name__] + [m.name for m in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")]


@pytest.fixture
def local_pretrained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``timm.create_model("arch.tag", pretrained=True)`` loads local weights of a tiny ``arch``, written here."""
    real = timm.create_model

    def create_model(name: str, pretrained: bool = False, **kwargs):  # noqa: ANN202
        architecture, _, tag = name.partition(".")
        if not (pretrained and tag):
            return real(name, pretrained=pretrained, **kwargs)
        file = tmp_path / f"{architecture}.safetensors"
        if not file.exists():
            save_file({k: v.contiguous() for k, v in real(architecture, **TINY, **kwargs).state_dict().items()},
                      str(file))
        return real(architecture, pretrained=True, pretrained_cfg_overlay={"file": str(file)}, **TINY, **kwargs)

    monkeypatch.setattr(timm, "create_model", create_model)
    monkeypatch.chdir(tmp_path)  # examples that save write here
    return tmp_path


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(REPO)))
def test_readme_python_blocks_run(readme: Path, local_pretrained: Path) -> None:
    for number, block in enumerate(code_blocks(readme, "python"), start=1):
        exec(compile(block, f"{readme.name} python block {number}", "exec"), {"__name__": "__readme__"})


@pytest.mark.parametrize("name", modules(adaptkit) + modules(recipes))
def test_docstring_examples_run(name: str, local_pretrained: Path) -> None:
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, name):
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} doctest failures in {name}"


def test_the_package_docstring_has_an_example_that_runs() -> None:
    results = doctest.testmod(adaptkit, optionflags=doctest.ELLIPSIS)
    assert results.attempted >= 3 and results.failed == 0


def command_lines() -> list[tuple[str, str]]:
    """(where, command) for every command line shown to users."""
    found = []
    for readme in READMES:
        for block in code_blocks(readme, "bash"):
            found += [(str(readme.relative_to(REPO)), line) for line in block.splitlines()]
    for name in modules(recipes):
        doc = importlib.import_module(name).__doc__ or ""
        found += [(name, line) for line in doc.splitlines() if line.startswith("    ")]
    for config in sorted((REPO / "recipes" / "configs").glob("*.yaml")):
        found += [(config.name, line.lstrip("# ").split(": ", 1)[-1]) for line in config.read_text().splitlines()
                  if line.startswith("#") and ("adaptkit " in line or "-m recipes." in line)]
    commands = []
    for where, line in found:
        line = line.split("  #")[0].strip()
        if line.startswith(("adaptkit ", "python -m", "torchrun ", "pip install")):
            commands.append((where, line))
    return commands


COMMANDS = command_lines()


def check_command(line: str) -> None:
    words = shlex.split(line.split(" && ")[0])  # the part after && is a command of its own, checked elsewhere
    if words[0] == "pip":
        extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        for spec in words[2:]:
            for extra in re.findall(r"\[(.*?)\]", spec):
                assert set(extra.split(",")) <= set(extras), line
        return
    if words[0] == "torchrun":
        words = ["python", *words[words.index("-m"):]]
    if words[:2] == ["python", "-m"]:
        module = words[2]
        assert importlib.util.find_spec(module) is not None, line
        if not module.startswith("recipes."):
            return
        words = ["adaptkit", "train" if module == "recipes.cli" else module.split(".")[1], *words[3:]]
    from recipes import cache_frames, cost, evaluate, predict, train
    from recipes._config import load_config

    command, args = words[1], words[2:]
    if command in ("ls", "cp"):
        return
    command = "cache" if command == "cache_frames" else command  # python -m recipes.cache_frames = adaptkit cache
    parsed = {"train": train, "evaluate": evaluate, "predict": predict, "cost": cost,
              "cache": cache_frames}[command].parse_args(args)
    if command in ("train", "evaluate", "predict", "cache") and (command == "train" or parsed.config):
        config = parsed.config
        if config is not None and not Path(config).is_file():
            config = Path(config).name  # a file the example makes first (adaptkit cp ... my_k400.yaml)
            config = "k400_vitb16_8x16" if config == "my_k400.yaml" else config
        load_config(config, parsed.overrides)


@pytest.mark.parametrize(("where", "line"), COMMANDS, ids=[f"{w}: {c[:60]}" for w, c in COMMANDS])
def test_command_lines_parse_and_their_configs_load(where: str, line: str) -> None:
    check_command(line)


def test_the_quick_start_is_two_commands_and_ci_runs_the_second() -> None:
    quick_start = code_blocks(REPO / "README.md", "bash")[0]
    commands = [line.split("  #")[0].strip() for line in quick_start.splitlines() if line.strip()]
    assert commands == ["pip install -e . && adaptkit train", 'pip install -e ".[test]" && python -m pytest -q']
    assert commands[1] in (REPO / ".ci" / "run").read_text().splitlines()


def test_recipes_and_benchmarks_import_only_public_adaptkit_names():
    """Public: listed in the module's ``__all__``, or a submodule that has one."""
    root = Path(__file__).resolve().parents[1]
    private = []
    for folder in ("recipes", "benchmarks"):
        for file in sorted((root / folder).glob("*.py")):
            for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
                if not (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("adaptkit")):
                    continue
                module = importlib.import_module(node.module)
                for alias in node.names:
                    value = getattr(module, alias.name, None)
                    public = alias.name in getattr(module, "__all__", ()) or hasattr(value, "__all__")
                    if not public:
                        private.append(f"{folder}/{file.name}:{node.lineno} {node.module}.{alias.name}")
    assert not private, private
