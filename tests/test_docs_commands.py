"""Every command README.md and docs/*.md show still names what exists (issue 35).

Commands are taken from fenced and indented code blocks and from inline code spans: each one that
starts with `python main.py`, `.venv/bin/python main.py`, `python -m X` or `.venv/bin/python -m X`
(`python3` too). For `-m X` the module must exist; for main.py every `--flag` must be one that
sifa_synthmix/flags.py defines (read from its source text), absl's own `--flagfile`, `--help`,
`--helpfull` or `--helpshort`, or `--noX` for a boolean X; and every `--flagfile=...flags` must be
a file. Placeholders (RUN, DIR, PATHS, $SEEDS, ...) are values, so they pass.

Fast and without TensorFlow: nothing here imports it (data_prep's package imports TensorFlow, so
its modules are checked as files; find_spec of another project module imports only its light
parent packages).
"""
import bisect
import importlib.util
import pathlib
import re
import shlex
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
FLAGS_SOURCE = REPO / "sifa_synthmix" / "flags.py"
ABSL_FLAGS = frozenset({"flagfile", "help", "helpfull", "helpshort"})

# A command: optional .venv/bin/, python or python3, then main.py or -m MODULE; or a span that
# starts with main.py itself. It must start the text or follow a space or shell punctuation.
COMMAND = re.compile(r"(?:^|(?<=[\s;&|(`]))(?:(?:\.venv/bin/)?python3? +(?:main\.py|-m +\S+)|main\.py(?= ))")
SHELL_STOP = frozenset({"|", "||", "&&", ";", ">", ">>", "2>", "2>&1", "&", "#"})
FENCE = re.compile(r"^\s*(```|~~~)")


@pytest.fixture(autouse=True)
def op_determinism_off_after_each_test():
    """Overrides conftest's fixture of that name, which imports TensorFlow after each test: this
    module never imports it, so there is no op determinism to reset."""
    yield


def defined_flags(source):
    """{flag name: DEFINE_ kind} of every flag a DEFINE_* call in `source` defines."""
    return {name: kind for kind, name in re.findall(r"DEFINE_(\w+)\(\s*[\"'](\w+)[\"']", source)}


def code_texts(markdown):
    """(line number, text) of each line of fenced and indented code blocks (backslash continuations
    joined) and of each inline code span (line breaks inside it read as spaces)."""
    found, prose = [], []
    in_fence = in_indented = False
    pending, pending_line, previous = "", 0, ""
    for number, line in enumerate(markdown.split("\n"), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
            line_is_code = True
        elif in_fence:
            line_is_code = True
        else:
            indented = bool(re.match(r"^( {4}|\t)\S", line))
            if indented and not previous.strip() and not last_prose_is_list(prose):
                in_indented = True  # an indented block starts after a blank line, outside a list
            elif line.strip() and not indented:
                in_indented = False
            line_is_code = in_indented
        previous = line
        if not line_is_code:
            prose.append((number, line))
            continue
        prose.append((number, ""))
        if FENCE.match(line):
            continue
        if not pending:
            pending_line = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        found.append((pending_line, pending + line))
        pending = ""
    text = "\n".join(line for _, line in prose)
    starts = [0]
    for _, line in prose[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    for match in re.finditer(r"(?<!`)`([^`]+)`(?!`)", text):
        number = prose[bisect.bisect_right(starts, match.start()) - 1][0]
        found.append((number, " ".join(match.group(1).split())))
    return found


def last_prose_is_list(prose):
    """Whether the last non-blank prose line is a list item or its continuation (an indented line
    after it continues the item, it starts no code block)."""
    for _, line in reversed(prose):
        if line.strip():
            return bool(re.match(r"^\s*([-*+]|\d+\.)\s", line)) or line.startswith("  ")
    return False


def tokens_of(command):
    """The command's words up to the first shell operator or comment."""
    try:
        words = shlex.split(command, comments=False, posix=True)
    except ValueError:  # an unbalanced quote in a span that shows part of a command
        words = command.split()
    kept = []
    for word in words:
        if word in SHELL_STOP or word.startswith("#"):
            break
        kept.append(word)
    return kept


def module_problem(module):
    """Why `python -m module` would not run, or None."""
    module = module.strip("`,;:()")
    if "*" in module:  # data_prep.*: the package is enough
        package = module.split("*")[0].rstrip(".")
        return None if (REPO / package.replace(".", "/")).is_dir() else f"no package {package}"
    parts = module.split(".")
    if (REPO / parts[0]).is_dir():  # a package of this repository
        base = REPO.joinpath(*parts)
        exists = base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()
        if not exists:
            return f"no module {module} in the repository"
        parents = [REPO.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts))]
        if any("tensorflow" in _read(parent).lower() for parent in parents):
            return None  # find_spec would import the parent, and TensorFlow with it
    if importlib.util.find_spec(module) is None:
        return f"no module {module}"
    return None


def _read(path):
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def flag_problems(words, flags):
    """Unknown flags of a main.py command's words and flagfiles that are not there."""
    problems = []
    for word in words:
        word = word.strip("[]")
        if not word.startswith("--") or word == "--":
            continue
        name, _, value = word[2:].partition("=")
        if name == "flagfile":
            problems += flagfile_problems(value)
            continue
        if name in flags or name in ABSL_FLAGS:
            continue
        if name.startswith("no") and flags.get(name[2:]) in ("bool", "boolean"):
            continue
        problems.append(f"--{name} is not a flag of sifa_synthmix/flags.py")
    return problems


def flagfile_problems(value):
    if value.endswith(".flags"):
        return [] if (REPO / value).is_file() else [f"--flagfile={value}: no such file"]
    if re.fullmatch(r"(configs/)?[A-Z_$][A-Z0-9_$]*", value):  # a placeholder such as FLAGFILE
        return []
    return [f"--flagfile={value}: neither a .flags file nor a placeholder"]


def command_problems(text, flags):
    """Problems of every command that starts in `text`."""
    problems = []
    for match in COMMAND.finditer(text):
        words = tokens_of(text[match.start():])
        if "-m" in words[:3]:
            module = words[words.index("-m") + 1]
            problem = module_problem(module)
            problems += [problem] if problem else []
            problems += [p for w in words if w.startswith("--flagfile=") for p in flagfile_problems(w.split("=", 1)[1])]
        else:
            start = words.index("main.py") + 1
            problems += flag_problems(words[start:], flags)
    return problems


def documents():
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_every_command_in_the_readme_and_docs_names_existing_modules_flags_and_flagfiles():
    tensorflow_before = "tensorflow" in sys.modules  # another test's import, in one process
    flags = defined_flags(FLAGS_SOURCE.read_text(encoding="utf-8"))
    assert len(flags) > 50 and "max_steps" in flags and flags["prepare_phantom"] == "bool"
    checked, problems = 0, []
    for path in documents():
        for number, text in code_texts(path.read_text(encoding="utf-8")):
            checked += len(COMMAND.findall(text))
            problems += [f"{path.relative_to(REPO)}:{number}: {p}  [{text.strip()[:100]}]"
                         for p in command_problems(text, flags)]
    assert checked > 40, f"only {checked} commands found: is the extraction broken?"
    assert not problems, "\n".join(problems)
    assert "tensorflow" not in sys.modules or tensorflow_before, "the check imported TensorFlow"


def test_a_misspelt_flag_an_absent_flagfile_and_an_absent_module_are_caught():
    flags = defined_flags(FLAGS_SOURCE.read_text(encoding="utf-8"))
    doc = "\n".join([
        "```bash",
        ".venv/bin/python main.py --flagfile=configs/demo.flags --max_step=5 \\",
        "  --noprepare_phantom --output_dir=RUN",
        "python -m data_prep.folders --mr_dir RAW",
        "```",
        "and inline `python main.py --flagfile=configs/nothing.flags --nomax_steps` too.",
    ])
    found = [p for _, text in code_texts(doc) for p in command_problems(text, flags)]
    assert found == ["--max_step is not a flag of sifa_synthmix/flags.py",
                     "no module data_prep.folders in the repository",
                     "--flagfile=configs/nothing.flags: no such file",
                     "--nomax_steps is not a flag of sifa_synthmix/flags.py"]
    good = "`python main.py --flagfile=configs/FLAGFILE --mode=predict [--save_probabilities] --nooverwrite`"
    assert [p for _, text in code_texts(good) for p in command_problems(text, flags)] == []
