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
READMES = [REPO / "README.md", REPO / "recipes" / "README.md", REPO / "benchmarks" / "README.md"]
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
            loop_values = {}  # for lr in 1e-4 2e-4; do ... $lr: checked with the loop's first value
            for line in block.splitlines():
                if loop := re.match(r"\s*for (\w+) in (\S+)", line):
                    loop_values[loop[1]] = loop[2]
                for name, value in loop_values.items():
                    line = line.replace(f"${name}", value)
                found.append((str(readme.relative_to(REPO)), re.sub(r"^\s*taskset -c \S+ ", "", line)))
    for name in modules(recipes):
        doc = importlib.import_module(name).__doc__ or ""
        found += [(name, line) for line in doc.splitlines() if line.startswith("    ")]
    for config in sorted((REPO / "recipes" / "configs").glob("*.yaml")):
        found += [(config.name, line.lstrip("# ").split(": ", 1)[-1]) for line in config.read_text().splitlines()
                  if line.startswith("#") and ("adaptkit " in line or "-m recipes." in line)]
    commands = []
    for where, line in found:
        line = line.split("  #")[0].strip()
        if line.startswith(("adaptkit ", "python -m", "torchrun ", "pip install", "bash ")):
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
    if words[0] == "bash":
        assert (REPO / words[1]).is_file(), line
        return
    if words[0] == "torchrun":
        words = ["python", *words[words.index("-m"):]]
    if words[:2] == ["python", "-m"]:
        module = words[2]
        assert importlib.util.find_spec(module) is not None, line
        if module.startswith("benchmarks."):
            check_benchmark_command(module, words[3:], line)
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


class _Parsed(Exception):
    """Raised instead of running a benchmark once its command line has been parsed."""


def check_benchmark_command(module: str, args: list[str], line: str) -> None:
    """Parse ``python -m benchmarks.<module> ARGS`` with the benchmark's own parser, running nothing after it: every
    option must exist and every value convert. ``train_cost --device cuda`` hands the rest to ``train_cost_gpu``'s
    parser, which is checked too; ``paper_table1``'s config overrides must load."""
    from benchmarks import _cli

    real = _cli.ArgumentParser.parse_known_args

    def parse_then_stop(parser, args=None, namespace=None):  # noqa: ANN001, ANN202
        raise _Parsed(*real(parser, args, namespace))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_cli.ArgumentParser, "parse_known_args", parse_then_stop)
        patch.setattr("sys.argv", [module, *args])  # benchmarks.data_loading.main() reads sys.argv
        try:
            importlib.import_module(module).main()
        except _Parsed as parsed:
            namespace, rest = parsed.args
        except SystemExit as error:
            if error.code == 0 and "--help" in args:
                return
            pytest.fail(f"{line!r} does not parse (exit status {error.code})")
        else:
            pytest.fail(f"{module}.main() ran without parsing its arguments with benchmarks._cli.ArgumentParser")
        if rest and module == "benchmarks.train_cost":
            from benchmarks import train_cost_gpu

            try:
                train_cost_gpu.main(namespace, rest)
            except _Parsed as parsed:
                rest = parsed.args[1]
            except SystemExit as error:
                pytest.fail(f"{line!r} does not parse (exit status {error.code})")
    assert not rest, f"{line!r}: unrecognized arguments {rest}"
    if module == "benchmarks.paper_table1":
        from recipes._config import load_config

        load_config(namespace.config, namespace.overrides)


@pytest.mark.parametrize(("where", "line"), COMMANDS, ids=[f"{w}: {c[:60]}" for w, c in COMMANDS])
def test_command_lines_parse_and_their_configs_load(where: str, line: str) -> None:
    check_command(line)


def test_the_quick_start_is_two_commands_and_ci_runs_the_second() -> None:
    quick_start = code_blocks(REPO / "README.md", "bash")[0]
    commands = [line.split("  #")[0].strip() for line in quick_start.splitlines() if line.strip()]
    assert commands == ["pip install -e . && adaptkit train", 'pip install -e ".[test]" && python -m pytest -q -n auto']
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


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)
    headings = re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(REPO)))
def test_readme_links_point_to_files_and_headings_that_exist(readme: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", readme.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://")):
            continue
        file, _, anchor = target.partition("#")
        path = (readme.parent / file).resolve() if file else readme
        if not path.exists() or (anchor and anchor not in heading_anchors(path)):
            broken.append(target)
    assert not broken, broken
