"""The docs stay true: every config key is documented in docs/configs.md with its current defaults, and
every command quoted in README.md and docs/*.md parses.

Commands: each `python -m dysen_jax...` / `python benchmarks/...` found in a code span or block is
grouped by (module, subcommand); each group runs once with `--help` (in parallel) and must exit 0,
and every `--flag` the docs pass must be one the program defines (`--config.a.b` overrides: a key of
some config). A program that needs an optional extra that is not installed is skipped, naming it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import glob
import importlib.util
import os
import re
import subprocess
import sys

import ml_collections
import pytest

# One xdist worker runs this module (`pytest -n 2 --dist loadgroup`), so its module fixtures are built once.
pytestmark = pytest.mark.xdist_group("docs")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS_MD = os.path.join(ROOT, "docs", "configs.md")
DOC_FILES = [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]
# Module missing at --help time -> the extra that brings it (documented in README / setup.py).
OPTIONAL_MODULES = {"apache_beam": "[beam]", "llama_cpp": "[local-llm]", "torch": "[torch]", "diffusers": "[torch]"}


# --- configs ------------------------------------------------------------------------------------------
def config_files() -> dict[str, str]:
    """{'tiny': '/.../configs/tiny.py', ...} for every config file with a get_config."""
    paths = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))
    return {os.path.splitext(os.path.basename(p))[0]: p for p in paths
            if "def get_config" in open(p, encoding="utf-8").read()}


def load_config(path: str) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location(f"_docs_config_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("")


def flatten(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, object]:
    """{'model.channels': (16, 32, 64), 'planner.llm.model': ..., 'seed': 0}: leaves only."""
    out: dict[str, object] = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@functools.lru_cache(maxsize=1)
def all_configs() -> dict[str, dict[str, object]]:
    return {name: flatten(load_config(path)) for name, path in config_files().items()}


def default_cell(configs: dict[str, dict[str, object]], name: str, key: str) -> str:
    """How docs/configs.md writes the default of `key` in config `name`."""
    from dysen_jax.parallel.logical import DEFAULT_RULES

    if key not in configs[name]:
        return "—"
    value = configs[name][key]
    return "`DEFAULT_RULES`" if value == DEFAULT_RULES else f"`{value!r}`"


def documented_rows() -> tuple[list[str], dict[str, list[str]]]:
    """(config names of the table columns, {key: [default cells]}) from docs/configs.md's tables."""
    columns: list[str] = []
    rows: dict[str, list[str]] = {}
    for line in open(CONFIGS_MD, encoding="utf-8"):
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("| key |"):
            columns = cells[1:-1]
        elif line.startswith("| `") and columns:
            key = cells[0].strip("`")
            rows[key] = cells[1:1 + len(columns)]
    return columns, rows


def test_every_config_key_is_documented_with_its_defaults():
    configs = all_configs()
    columns, rows = documented_rows()
    assert set(columns) == set(configs), (
        f"docs/configs.md's tables have columns {columns}, configs/ has {sorted(configs)}: add a column per config")
    keys = sorted({k for flat in configs.values() for k in flat})
    fix = lambda k: f"| `{k}` | " + " | ".join(default_cell(configs, n, k) for n in columns) + " | <meaning> |"
    undocumented = [k for k in keys if k not in rows]
    assert not undocumented, ("config keys missing from docs/configs.md (add these rows to the section's table, "
                              "with a meaning):\n" + "\n".join(fix(k) for k in undocumented))
    stale = [k for k in rows if k not in keys]
    assert not stale, f"docs/configs.md documents keys no config has any more: {stale}"
    wrong = [k for k in keys if rows[k] != [default_cell(configs, n, k) for n in columns]]
    assert not wrong, ("docs/configs.md shows defaults that differ from configs/ (the row should start):\n"
                       + "\n".join(fix(k).rsplit(" <meaning> |", 1)[0] for k in wrong))


def test_config_overrides_quoted_in_the_docs_exist():
    """Every `--config.section.key=...` written anywhere in the docs names a real key (configs are locked)."""
    keys = {k for flat in all_configs().values() for k in flat}
    quoted = {(m, os.path.relpath(path, ROOT)) for path in DOC_FILES
              for m in re.findall(r"--config\.([A-Za-z_][\w.]*[A-Za-z0-9_])", open(path, encoding="utf-8").read())}
    unknown = sorted((where, key) for key, where in quoted if key not in keys)
    assert not unknown, f"the docs override config keys that no config has (file, key): {unknown}"


# --- commands -----------------------------------------------------------------------------------------
COMMAND = re.compile(r"python3?\s+(?:-m\s+(dysen_jax[\w.]*)|(benchmarks/\w+\.py))((?:\s+\S+)*)")
SUBCOMMAND = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


@dataclasses.dataclass
class Program:
    """One (module or script, subcommand) the docs quote, with every flag they pass to it."""

    target: str
    subcommand: str
    flags: set[str] = dataclasses.field(default_factory=set)
    quoted_in: set[str] = dataclasses.field(default_factory=set)

    @property
    def argv(self) -> list[str]:
        head = ["-m", self.target] if not self.target.endswith(".py") else [self.target]
        return [sys.executable, *head, *([self.subcommand] if self.subcommand else [])]


def code_snippets(text: str) -> list[str]:
    """Fenced blocks (line continuations joined) and inline code spans (may wrap lines)."""
    snippets = []

    def take_block(match: re.Match) -> str:
        snippets.append(match.group(1).replace("\\\n", " "))
        return ""

    rest = re.sub(r"```[^\n]*\n(.*?)```", take_block, text, flags=re.S)
    snippets += [m.replace("\n", " ") for m in re.findall(r"`([^`]+)`", rest)]
    return snippets


def quoted_commands(text: str) -> list[tuple[str, str, list[str]]]:
    """(target, subcommand, [flag names]) for every command in `text`'s code."""
    found = []
    for snippet in code_snippets(text):
        for piece in re.split(r"&&|;|\n|\s\|\s", snippet):
            for match in COMMAND.finditer(piece):
                target = match.group(1) or match.group(2)
                args = match.group(3).split(" -- ")[0].split()  # after " -- ": another program's flags
                sub = args[0] if args and SUBCOMMAND.fullmatch(args[0]) else ""
                args = [a.lstrip("[(") for a in args]
                flags = [re.sub(r"[\]\[)(,.]+$", "", a.split("=")[0]) for a in args if a.startswith("--") and len(a) > 2]
                found.append((target, sub, flags))
    return found


def documented_programs() -> dict[tuple[str, str], Program]:
    programs: dict[tuple[str, str], Program] = {}
    for path in DOC_FILES:
        for target, sub, flags in quoted_commands(open(path, encoding="utf-8").read()):
            program = programs.setdefault((target, sub), Program(target, sub))
            program.flags.update(flags)
            program.quoted_in.add(os.path.relpath(path, ROOT))
    return programs


PROGRAMS = documented_programs()


def defined_flags(help_text: str) -> set[str]:
    """Flag names in a --help/--helpfull listing (absl `  --[no]x:`, argparse `  --x X, --no-x`)."""
    names = set()
    for line in help_text.splitlines():
        if line.lstrip().startswith("-"):
            for negatable, name in re.findall(r"--(\[no\])?([A-Za-z][\w-]*)", line):
                names.update({f"--{name}", f"--no{name}"} if negatable else {f"--{name}"})
    return names


def run_help(program: Program) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([*program.argv, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    if out.returncode == 0 and "--helpfull" in text:  # absl lists only the main module's flags under --help
        full = subprocess.run([*program.argv, "--helpfull"], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)
        text += full.stdout
    return out.returncode, text


@pytest.fixture(scope="module")
def help_outputs() -> dict[tuple[str, str], tuple[int, str]]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = pool.map(run_help, PROGRAMS.values())
        return dict(zip(PROGRAMS, results))


def test_docs_quote_the_entry_points():
    """The extraction works: README's core commands are found."""
    targets = {t for t, _ in PROGRAMS}
    assert {"dysen_jax.preprocess", "dysen_jax.train", "dysen_jax.sample", "dysen_jax.convert"} <= targets, targets


@pytest.mark.parametrize("key", sorted(PROGRAMS), ids=lambda k: " ".join(filter(None, k)))
def test_quoted_command_parses(key, help_outputs):
    program = PROGRAMS[key]
    code, text = help_outputs[key]
    where = ", ".join(sorted(program.quoted_in))
    missing = re.search(r"No module named '([\w.]+)'", text)
    if code != 0 and missing and missing.group(1).split(".")[0] in OPTIONAL_MODULES:
        pytest.skip(f"needs the {OPTIONAL_MODULES[missing.group(1).split('.')[0]]} extra "
                    f"({missing.group(1)} is not installed)")
    assert code == 0, f"`{' '.join(program.argv[1:])} --help` (quoted in {where}) exited {code}:\n{text[-2000:]}"
    known = defined_flags(text)
    config_keys = {k for flat in all_configs().values() for k in flat}
    unknown = sorted(f for f in program.flags if not f.startswith("--config.") and f not in known | {"--help"})
    bad_keys = sorted(f for f in program.flags if f.startswith("--config.") and f[len("--config."):] not in config_keys)
    assert not unknown, f"{where} quote(s) {program.target} {program.subcommand} with flags it does not define: {unknown}"
    assert not bad_keys, f"{where} override(s) config keys that no config has: {bad_keys}"
